"""What the agent does after an attempt ended: restart it or settle the job's state. Pure:
the attempt history in, a decision out."""

from __future__ import annotations

from dataclasses import dataclass

from runctl.errors import UsageError
from runctl.models import Attempt


@dataclass(frozen=True)
class Decision:
    restart: bool
    final_state: str | None  # the job's state when not restarting
    why: str


def classify(exit_code: int, notice: dict | None, *, final_saved: bool = True) -> str:
    """An attempt's reason. One that received a notice counts as interrupted whatever its
    exit code: PyTorch Lightning and the HF Trainer save on SIGTERM and exit 0. A script
    that finished is "completed" only when its final snapshot reached the store
    (``final_saved``); else "unsaved": its last checkpoint exists only on this machine."""
    if notice is not None:
        return "stopped" if not notice.get("restartable", True) else "interrupted"
    if exit_code == 0:
        return "completed" if final_saved else "unsaved"
    if exit_code < 0:
        return "killed"  # a signal runctl did not send: the OOM killer, a user's kill -9
    return "failed"


def _machine_goes(attempt: Attempt) -> bool:
    """A spot reclaim takes this very machine: restarting on it would only be cut short."""
    notice = attempt.interruption or {}
    return notice.get("source") in ("spot", "shutdown") and notice.get("action") in ("terminate", "stop", "hibernate")


def decide(attempts: list[Attempt] | tuple[Attempt, ...], *, max_restarts: int, max_restarts_on_errors: int) -> Decision:
    last = attempts[-1]
    interrupted = sum(1 for a in attempts if a.reason == "interrupted")
    errors = sum(1 for a in attempts if a.reason in ("failed", "killed"))
    if last.reason == "completed":
        return Decision(False, "completed", "the script finished")
    if last.reason == "stopped":
        return Decision(False, "stopped", "stopped on request")
    if last.reason == "unsaved":
        # Not restarted: the store just failed, and a new attempt would redo the work for nothing.
        return Decision(False, "failed", "the script finished but its final checkpoint snapshot is not in the "
                        "store; run the same command again to resume from the latest complete snapshot")
    if last.reason == "interrupted" and _machine_goes(last):
        return Decision(False, "interrupted", "the machine is being reclaimed; the job resumes from its latest "
                        "snapshot on another machine (its group's next instance on AWS; runctl run again here)")
    if last.reason == "interrupted":
        if interrupted <= max_restarts:
            return Decision(True, None, f"interruption {interrupted} of at most {max_restarts} restarts")
        return Decision(False, "failed", f"interrupted {interrupted} times, more than --max-restarts {max_restarts}")
    if errors <= max_restarts_on_errors:
        return Decision(True, None, f"error {errors} of at most {max_restarts_on_errors} restarts on errors")
    suffix = f" (exit code {last.exit_code})" if last.exit_code is not None else ""
    return Decision(False, "failed", f"the script {last.reason}{suffix}")


def stopped_on(exc: BaseException) -> tuple[str, str]:
    """The job's message, and its open attempt's reason, when the agent itself stopped on
    ``exc``. Bad input (a UsageError) stops it the same way at every run until it is fixed:
    the message says what is wrong and that it needs fixing, never a plain "run it again";
    and no machine was lost."""
    if isinstance(exc, UsageError):
        return (f"the agent stopped: {exc}; fix that first (run as it is, the job stops the same way), "
                "then run it again to resume from the latest complete snapshot"), "failed"
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return (f"the agent stopped on {what}; run the same command again to resume from the latest complete "
            "snapshot"), "lost"


#: How an attempt ends when the job goes on in another: a notice or rehearsal, or a lost machine.
RECOVERED_FROM = ("interrupted", "lost")


def recoveries(attempts) -> int:
    """How many times the job went on in a new attempt after an interruption or a loss."""
    return sum(1 for previous in attempts[:-1] if previous.reason in RECOVERED_FROM)


def time_lost(attempts) -> float:
    """Seconds between an interrupted (or lost) attempt's end and the next attempt's start, summed."""
    lost = 0.0
    for previous, following in zip(attempts, attempts[1:]):
        if previous.reason in RECOVERED_FROM and previous.ended is not None:
            lost += max(0.0, following.started - previous.ended)
    return lost
