"""The agent's restart policy: an attempt's reason from its exit, and restart-or-stop from the history."""

from __future__ import annotations

import pytest

from runctl.models import Attempt
from runctl.agent.restart_policy import classify, decide, stopped_on
from runctl.errors import StoreError, UsageError


def attempts(*reasons: str, exit_code: int | None = None) -> list[Attempt]:
    return [Attempt(i, float(i), ended=i + 0.5, reason=r, exit_code=exit_code) for i, r in enumerate(reasons)]


NOTICE = {"source": "spot", "action": "terminate", "received": 1.0, "restartable": True}
USER_STOP = {"source": "user", "action": "stop-job", "received": 1.0, "restartable": False}


@pytest.mark.parametrize(
    ("exit_code", "notice", "reason"),
    [
        (0, None, "completed"),
        (1, None, "failed"),
        (2, None, "failed"),
        (-9, None, "killed"),  # a signal runctl did not send: OOM killer, kill -9
        (-15, None, "killed"),
        # An interrupted attempt counts as interrupted whatever its exit code (Lightning and
        # the HF Trainer save on SIGTERM and exit 0).
        (0, NOTICE, "interrupted"),
        (143, NOTICE, "interrupted"),
        (-9, NOTICE, "interrupted"),
        (1, NOTICE, "interrupted"),
        (0, USER_STOP, "stopped"),
        (-9, USER_STOP, "stopped"),
        # A notice without the key is restartable.
        (0, {"source": "rehearsal"}, "interrupted"),
    ],
)
def test_classify(exit_code, notice, reason):
    assert classify(exit_code, notice) == reason


def test_completed_is_final():
    decision = decide(attempts("interrupted", "completed"), max_restarts=3, max_restarts_on_errors=0)
    assert (decision.restart, decision.final_state) == (False, "completed")


def test_stopped_is_final_even_with_restarts_left():
    decision = decide(attempts("stopped"), max_restarts=10, max_restarts_on_errors=10)
    assert (decision.restart, decision.final_state) == (False, "stopped")


@pytest.mark.parametrize("max_restarts", [0, 1, 3])
def test_interruptions_restart_up_to_max_restarts(max_restarts):
    history: list[str] = []
    for n in range(1, max_restarts + 2):
        history.append("interrupted")
        decision = decide(attempts(*history), max_restarts=max_restarts, max_restarts_on_errors=0)
        if n <= max_restarts:
            assert decision.restart and decision.final_state is None, n
            assert f"{n} of at most {max_restarts}" in decision.why
        else:
            assert not decision.restart and decision.final_state == "failed"
            assert "--max-restarts" in decision.why


@pytest.mark.parametrize("reason", ["failed", "killed"])
def test_errors_do_not_restart_by_default(reason):
    decision = decide(attempts(reason, exit_code=1), max_restarts=3, max_restarts_on_errors=0)
    assert (decision.restart, decision.final_state) == (False, "failed")
    assert reason in decision.why and "exit code 1" in decision.why


def test_errors_restart_up_to_their_own_budget():
    assert decide(attempts("failed"), max_restarts=0, max_restarts_on_errors=2).restart
    assert decide(attempts("failed", "killed"), max_restarts=0, max_restarts_on_errors=2).restart
    final = decide(attempts("failed", "killed", "failed"), max_restarts=0, max_restarts_on_errors=2)
    assert (final.restart, final.final_state) == (False, "failed")


def test_budgets_are_counted_separately():
    # Two errors do not use up the interruption budget, and interruptions not the error budget.
    history = attempts("failed", "failed", "interrupted")
    assert decide(history, max_restarts=1, max_restarts_on_errors=2).restart
    history = attempts("interrupted", "interrupted", "failed")
    assert decide(history, max_restarts=2, max_restarts_on_errors=1).restart


def test_decide_is_pure():
    history = tuple(attempts("interrupted"))
    first = decide(history, max_restarts=1, max_restarts_on_errors=0)
    assert decide(history, max_restarts=1, max_restarts_on_errors=0) == first
    assert history == tuple(attempts("interrupted"))


@pytest.mark.parametrize("action", ["terminate", "stop", "hibernate"])
def test_a_spot_reclaim_is_not_restarted_on_the_dying_machine(action):
    reclaimed = Attempt(0, 0.0, reason="interrupted", interruption={"source": "spot", "action": action})
    decision = decide([reclaimed], max_restarts=5, max_restarts_on_errors=0)
    assert not decision.restart and decision.final_state == "interrupted"
    assert "another machine" in decision.why


def test_a_rehearsed_or_rebalance_interruption_restarts_here():
    for source in ("rehearsal", "rebalance"):
        attempt = Attempt(0, 0.0, reason="interrupted", interruption={"source": source, "action": "terminate"})
        assert decide([attempt], max_restarts=1, max_restarts_on_errors=0).restart


# -- a final snapshot that did not reach the store --------------------------------------------

def test_a_finished_script_whose_final_snapshot_failed_is_not_completed():
    assert classify(0, None, final_saved=False) == "unsaved"
    # The other reasons stand: the job goes on (or stops) from the latest complete snapshot.
    assert classify(0, NOTICE, final_saved=False) == "interrupted"
    assert classify(1, None, final_saved=False) == "failed"


def test_an_unsaved_attempt_ends_the_job_failed_and_resumable_without_a_restart():
    decision = decide(attempts("unsaved", exit_code=0), max_restarts=3, max_restarts_on_errors=3)
    assert (decision.restart, decision.final_state) == (False, "failed")
    assert "final checkpoint snapshot" in decision.why and "resume" in decision.why


def test_an_agent_stopped_by_bad_input_says_what_to_fix_not_to_run_again():
    message, reason = stopped_on(UsageError("checkpoint folder /x holds 1 file(s) runctl did not write: a"))
    assert message.startswith("the agent stopped: checkpoint folder /x holds 1 file(s) runctl did not write: a; "
                              "fix that first")
    assert "run the same command again" not in message and "resume from the latest complete snapshot" in message
    assert reason == "failed"  # bad input loses no machine


@pytest.mark.parametrize("error", [StoreError("connection reset"), RuntimeError("a bug"), KeyboardInterrupt()])
def test_an_agent_stopped_by_anything_else_is_run_again_as_it_is(error):
    message, reason = stopped_on(error)
    assert message.startswith(f"the agent stopped on {type(error).__name__}")
    assert message.endswith("run the same command again to resume from the latest complete snapshot")
    assert reason == "lost"
