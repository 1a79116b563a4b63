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
