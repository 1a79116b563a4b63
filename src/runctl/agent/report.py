"""The rehearsal report: what each interruption cost, and whether the job passed. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from runctl.agent.protection import fix_options
from runctl.models import Attempt, Record


@dataclass(frozen=True)
class AttemptCost(Record):
    number: int
    reason: str | None
    resumed_from: int | None
    first_step: int | None
    last_step: int | None
    seconds: float | None
    steps_lost: int | None  # steps done in this attempt that the next one did again
    seconds_lost: float | None  # those steps' time, plus the restart gap


@dataclass(frozen=True)
class RehearsalReport(Record):
    planned: int
    injected: int
    attempts: tuple[AttemptCost, ...]
    verdict: str  # "pass" or "fail"
    problems: tuple[str, ...]


def _cost(attempt: Attempt, following: Attempt | None) -> AttemptCost:
    seconds = attempt.ended - attempt.started if attempt.ended else None
    steps_lost = seconds_lost = None
    if following is not None and attempt.last_step is not None:
        resumed_at = (following.first_step - 1) if following.first_step is not None else 0
        steps_lost = max(0, attempt.last_step - resumed_at)
        done = attempt.last_step - (attempt.first_step or 1) + 1
        per_step = seconds / done if seconds and done > 0 else 0.0
        gap = following.started - attempt.ended if attempt.ended else 0.0
        seconds_lost = round(steps_lost * per_step + gap, 3)
    return AttemptCost(attempt.number, attempt.reason, attempt.resumed_from, attempt.first_step,
                       attempt.last_step, round(seconds, 3) if seconds is not None else None,
                       steps_lost, seconds_lost)


def rehearsal_report(attempts: list[Attempt] | tuple[Attempt, ...], planned: int, injected: int,
                     final_state: str) -> RehearsalReport:
    attempts = list(attempts)
    costs = tuple(_cost(a, attempts[i + 1] if i + 1 < len(attempts) else None) for i, a in enumerate(attempts))
    problems = []
    if injected < planned:
        problems.append(f"the script finished after {injected} of {planned} interruptions; "
                        "interrupt earlier with --rehearse-at, or give it more steps")
    if final_state != "completed":
        problems.append(f"the job ended {final_state}, not completed")
    for before, after in zip(attempts, attempts[1:]):
        # The checkpoint in the store after `before`: its own last snapshot, else (it saved
        # nothing new) the one it had resumed from.
        available = before.final_snapshot if before.final_snapshot is not None else before.resumed_from
        if before.reason == "interrupted" and after.resumed_from is None and available is not None:
            problems.append(f"attempt {after.number} started from scratch although snapshot {available} "
                            f"was in the store after attempt {before.number}")
        if before.reason == "interrupted" and available is None:
            problems.append(f"attempt {before.number} left no checkpoint in the store before its interruption: "
                            "save checkpoints in RUNCTL_CHECKPOINT_DIR, or point runctl at the script's own "
                            f"folder: {fix_options()}")
    return RehearsalReport(planned, injected, costs, "fail" if problems else "pass", tuple(problems))
