"""StepLog: the step a checkpoint file holds, from the script's progress records. Pure."""

from __future__ import annotations

from runctl.agent.steps import StepLog


def record(recent=(), saves=()):
    return {"step": None, "recent": [list(r) for r in recent], "saves": [list(s) for s in saves]}


def test_a_save_atomic_record_gives_the_exact_step():
    log = StepLog()
    log.add(record(recent=[(10.0, 100), (11.0, 150)], saves=[("last.pt", 120, 10.6)]))
    log.add(record(recent=[(11.0, 150), (12.0, 200)], saves=[("last.pt", 120, 10.6), ("last.pt", 210, 12.3)]))
    assert log.step_at("last.pt", 10.5) == 120  # written at 10.5, renamed into place at 10.6
    assert log.step_at("last.pt", 12.2) == 210  # the next version: the next save
    assert log.step_at("other.pt", 10.5) == 100  # no save of that path: the last step reported before


def test_a_save_of_a_folder_gives_the_step_of_its_files():
    log = StepLog()
    log.add(record(saves=[("checkpoint-500", 500, 20.0)]))
    assert log.step_at("checkpoint-500/model.safetensors", 19.5) == 500
    assert log.step_at("checkpoint-5000/model.safetensors", 19.5) is None


def test_reports_give_the_last_step_reported_before_the_file_was_written():
    log = StepLog()
    log.add(record(recent=[(1.0, 10), (2.0, 20)]))
    log.add(record(recent=[(2.0, 20), (3.0, 30), (4.0, 40)]))  # overlapping rings merge
    assert log.step_at("last.pt", 3.5) == 30  # not 40, reached after the file was written
    assert log.step_at("last.pt", 3.0) == 30
    assert log.step_at("last.pt", 0.5) is None  # before any report: unknown
    assert log.step_at("last.pt", 99.0) == 40


def test_malformed_records_are_skipped():
    log = StepLog()
    log.add({"recent": "nonsense", "saves": [[1, 2], ["a.pt", "x", 3.0], ["b.pt", 5, True]]})
    log.add({"recent": [[True, 3], ["t", 4], [5.0, 6]]})
    assert log.step_at("a.pt", 10.0) == 6 and log.step_at("b.pt", 1.0) is None


def test_the_time_a_step_was_first_reported():
    log = StepLog()
    log.add(record(recent=[(5.0, 396), (5.2, 397)]))
    log.add(record(recent=[(5.2, 397), (5.4, 397)]))  # the same step reported again later
    assert log.reported_at(396) == 5.0
    assert log.reported_at(397) == 5.2
    assert log.reported_at(395) is None  # never reported (or forgotten): unknown
