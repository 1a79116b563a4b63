"""The agent's reading of the script's progress file: the first and last step it reported,
and a missing or half-written file read as nothing new."""

from __future__ import annotations

import json

from runctl.agent.progress_reader import ProgressReader


def test_first_and_last_step_follow_the_progress_file(tmp_path):
    path = tmp_path / "progress-0.json"
    reader = ProgressReader(path)
    reader.read()  # no file yet
    assert (reader.first_step, reader.last_step) == (None, None)

    path.write_text(json.dumps({"step": 10}))
    reader.read()
    assert (reader.first_step, reader.last_step) == (10, 10)

    path.write_text(json.dumps({"step": 20}))
    reader.read()
    assert (reader.first_step, reader.last_step) == (10, 20)

    path.write_text(json.dumps({"step": 30, "first_step": 5}))
    reader.read()
    assert (reader.first_step, reader.last_step) == (5, 30)


def test_a_half_written_or_odd_file_changes_nothing(tmp_path):
    path = tmp_path / "progress-0.json"
    reader = ProgressReader(path)
    path.write_text(json.dumps({"step": 7}))
    reader.read()
    for content in ('{"step": 8', "[1, 2]", json.dumps({"step": "eight"})):
        path.write_text(content)
        reader.read()
        assert (reader.first_step, reader.last_step) == (7, 7)


def test_the_time_of_the_first_step_is_the_scripts_report_of_it_logged_once(tmp_path, caplog):
    path = tmp_path / "progress-1.json"
    reader = ProgressReader(path)
    path.write_text(json.dumps({"step": 42, "first_step": 40, "recent": [[100.5, 40], [100.7, 41], [100.9, 42]]}))
    with caplog.at_level("INFO", logger="runctl.agent.progress_reader"):
        reader.read()
        path.write_text(json.dumps({"step": 43, "first_step": 40, "recent": [[100.5, 40], [101.1, 43]]}))
        reader.read()
    assert reader.first_step_at == 100.5
    assert [r.getMessage() for r in caplog.records] == ["progress-1.json: first step 40 reported at 100.500"]


def test_no_first_step_time_until_a_report_of_that_step_is_seen(tmp_path):
    path = tmp_path / "progress-0.json"
    reader = ProgressReader(path)
    path.write_text(json.dumps({"step": 7}))  # an older script: no recent reports
    reader.read()
    assert (reader.first_step, reader.first_step_at) == (7, None)
