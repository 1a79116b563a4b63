"""The rehearsal report: what each interruption cost, and the verdict. Pure."""

from __future__ import annotations

import pytest

from runctl.agent.report import rehearsal_report
from runctl.models import Attempt

NOTICE = {"source": "rehearsal", "action": "terminate", "received": 0.0}


def attempt(number, started, ended, reason, *, first=None, last=None, resumed_from=None, final=None):
    return Attempt(number, started, ended=ended, reason=reason, first_step=first, last_step=last,
                   resumed_from=resumed_from, final_snapshot=final,
                   interruption=NOTICE if reason == "interrupted" else None)


def three_attempts():
    return [
        # 100 steps in 10 s; the checkpoint it left was at step 80, so 20 steps are done again.
        attempt(0, 0.0, 10.0, "interrupted", first=1, last=100, final=1),
        attempt(1, 12.0, 22.0, "interrupted", first=81, last=180, resumed_from=1, final=2),
        attempt(2, 23.0, 40.0, "completed", first=181, last=400, resumed_from=2, final=3),
    ]


def test_pass_with_steps_and_time_lost():
    report = rehearsal_report(three_attempts(), planned=2, injected=2, final_state="completed")
    assert report.verdict == "pass" and report.problems == ()
    assert (report.planned, report.injected) == (2, 2)
    first, second, last = report.attempts
    assert first.steps_lost == 20
    assert first.seconds == 10.0
    assert first.seconds_lost == pytest.approx(20 * 0.1 + 2.0)  # 20 steps at 0.1 s, plus the gap
    assert second.steps_lost == 0  # resumed exactly where it stopped
    assert second.seconds_lost == pytest.approx(1.0)  # the restart gap only
    assert last.steps_lost is None and last.seconds_lost is None  # nothing came after it
    assert [c.resumed_from for c in report.attempts] == [None, 1, 2]


def test_fewer_injected_than_planned_fails():
    attempts = [attempt(0, 0.0, 5.0, "completed", first=1, last=50, final=1)]
    report = rehearsal_report(attempts, planned=2, injected=0, final_state="completed")
    assert report.verdict == "fail"
    assert any("0 of 2 interruptions" in p for p in report.problems)


def test_a_job_that_did_not_complete_fails():
    attempts = three_attempts()[:2]
    report = rehearsal_report(attempts, planned=2, injected=2, final_state="failed")
    assert report.verdict == "fail"
    assert any("ended failed" in p for p in report.problems)


def test_restart_from_scratch_despite_a_snapshot_fails():
    attempts = three_attempts()
    attempts[1] = attempt(1, 12.0, 22.0, "interrupted", first=1, last=100, resumed_from=None, final=2)
    report = rehearsal_report(attempts, planned=2, injected=2, final_state="completed")
    assert report.verdict == "fail"
    assert any("attempt 1 started from scratch" in p and "snapshot 1" in p for p in report.problems)
    assert report.attempts[0].steps_lost == 100  # everything was done again


def test_an_interruption_without_a_checkpoint_fails():
    attempts = [attempt(0, 0.0, 5.0, "interrupted", first=1, last=50, final=None),
                attempt(1, 6.0, 20.0, "completed", first=1, last=200)]
    report = rehearsal_report(attempts, planned=1, injected=1, final_state="completed")
    assert report.verdict == "fail"
    assert any("left no checkpoint" in p for p in report.problems)
    assert report.attempts[0].steps_lost == 50


def test_without_progress_reports_the_costs_are_unknown():
    attempts = [attempt(0, 0.0, 5.0, "interrupted", final=1), attempt(1, 6.0, 9.0, "completed", resumed_from=1)]
    report = rehearsal_report(attempts, planned=1, injected=1, final_state="completed")
    assert report.verdict == "pass"
    assert report.attempts[0].steps_lost is None and report.attempts[0].seconds_lost is None
    assert report.to_dict()["attempts"][0]["number"] == 0  # a Record: renders as JSON


def test_an_attempt_interrupted_before_its_first_new_checkpoint_still_leaves_the_restored_one():
    # Attempt 1 resumed from snapshot 1 and was interrupted before it saved anything: the
    # store still holds snapshot 1 and attempt 2 resumes from it. Work was lost, not the job.
    attempts = [attempt(0, 0.0, 10.0, "interrupted", first=1, last=100, final=1),
                attempt(1, 11.0, 12.0, "interrupted", first=101, last=110, resumed_from=1, final=None),
                attempt(2, 13.0, 30.0, "completed", first=101, last=300, resumed_from=1, final=2)]
    report = rehearsal_report(attempts, planned=2, injected=2, final_state="completed")
    assert report.verdict == "pass", report.problems
    assert report.attempts[1].steps_lost == 10

    attempts[2] = attempt(2, 13.0, 30.0, "completed", first=1, last=300, resumed_from=None, final=2)
    report = rehearsal_report(attempts, planned=2, injected=2, final_state="completed")
    assert report.verdict == "fail"
    assert any("attempt 2 started from scratch although snapshot 1" in p for p in report.problems)

