"""recovery_decision: what the controller does, from the job's status and its instance's state;
recoveries and time lost, as reports count them. Pure."""

from __future__ import annotations

import pytest

from runctl.models import Attempt, JobStatus
from runctl.resume.policy import (Done, GiveUp, Relaunch, Wait, launch_backoff, recoveries, recovery_decision,
                                  time_lost)

NOW = 10_000.0
SPOT = {"source": "spot", "action": "terminate", "received": NOW - 1, "deadline": NOW + 119}


def status(state="running", *, on="i-a", notice=None, heartbeat=NOW - 1, attempts=1):
    made = tuple(Attempt(n, NOW - 100 + n, instance_id=on) for n in range(attempts))
    return JobStatus("job", state, made, heartbeat=heartbeat, notice=notice)


def decide(job, instance_state="running", *, instance="i-a", restarts=0, max_restarts=3, first=0):
    return recovery_decision(job, instance, instance_state, now=NOW, restarts_so_far=restarts,
                             max_restarts=max_restarts, first_attempt=first)


def test_a_running_job_is_left_alone():
    assert isinstance(decide(status()), Wait)


def test_a_spot_notice_relaunches_at_once_while_the_instance_still_runs():
    decision = decide(status(notice=SPOT))
    assert isinstance(decision, Relaunch) and "spot notice" in decision.why


@pytest.mark.parametrize("state", ["shutting-down", "terminated", "stopping", "stopped", None])
def test_a_gone_instance_relaunches(state):
    assert isinstance(decide(status(), state), Relaunch)


def test_an_interrupted_job_relaunches():
    assert isinstance(decide(status("interrupted")), Relaunch)


def test_a_rebalance_recommendation_does_not_relaunch():
    assert isinstance(decide(status(notice={"source": "rebalance", "action": "rebalance"})), Wait)


def test_after_a_relaunch_the_old_notice_does_not_relaunch_again():
    # The job's last attempt ran on i-a; the controller moved it to i-b, which has not started it yet.
    assert isinstance(decide(status("interrupted", notice=SPOT), "pending", instance="i-b"), Wait)


@pytest.mark.parametrize("state", ["completed", "failed", "stopped"])
def test_a_job_that_ended_on_its_instance_is_done(state):
    decision = decide(status(state), "running")
    assert decision == Done(state, "")


def test_attempts_of_an_earlier_submission_do_not_count():
    assert isinstance(decide(status("completed"), first=1), Wait)


def test_a_stale_heartbeat_relaunches_only_when_the_instance_does_not_run():
    stale = status(heartbeat=NOW - 300)
    assert isinstance(decide(stale, "running"), Wait)
    assert isinstance(decide(stale, "pending"), Relaunch)


def test_restarts_are_bounded():
    decision = decide(status(notice=SPOT), restarts=3, max_restarts=3)
    assert isinstance(decision, GiveUp) and decision.why.startswith("gave up after 3 recoveries: spot notice")


def test_no_status_yet_waits_unless_the_instance_is_gone():
    assert isinstance(decide(None, "pending"), Wait)
    assert isinstance(decide(None, "terminated"), Relaunch)


def test_backoff_doubles_and_is_capped():
    assert [launch_backoff(n) for n in (1, 2, 3, 4, 10)] == [1, 2, 4, 8, 30]


def test_time_lost_sums_the_gaps_after_interruptions():
    attempts = (Attempt(0, 0.0, ended=10.0, reason="interrupted"), Attempt(1, 14.0, ended=20.0, reason="interrupted"),
                Attempt(2, 21.5, ended=30.0, reason="completed"))
    assert time_lost(attempts) == pytest.approx(5.5)


def test_recoveries_and_time_lost_count_interrupted_and_lost_attempts_that_were_followed():
    def attempts(*reasons: str) -> list[Attempt]:
        return [Attempt(i, float(i), ended=i + 0.5, reason=r) for i, r in enumerate(reasons)]

    history = attempts("interrupted", "lost", "completed")
    assert recoveries(history) == 2
    assert time_lost(history) == pytest.approx(1.0)  # 0.5 s after each of the first two
    assert recoveries(attempts("interrupted")) == 0  # noticed, not resumed yet
    assert recoveries(attempts("failed", "completed")) == 0
