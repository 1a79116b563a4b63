"""What recovery on another machine does: pure decisions from the job's status and its
instance's state. (Whether an attempt restarts in place is the agent's:
``runctl.agent.restart_policy``.)"""

from __future__ import annotations

from dataclasses import dataclass

#: Instance states in which the machine is gone or going: its job must move.
MACHINE_GONE = ("shutting-down", "terminated", "stopping", "stopped")
#: Job states after which nobody needs to act (an "interrupted" job still needs a machine).
JOB_DONE = ("completed", "failed", "stopped")
#: A job's heartbeat older than this (with its instance not running) means its agent is gone.
HEARTBEAT_STALE_S = 30.0


@dataclass(frozen=True)
class Relaunch:
    why: str


@dataclass(frozen=True)
class Wait:
    why: str = ""


@dataclass(frozen=True)
class GiveUp:
    why: str


@dataclass(frozen=True)
class Done:
    state: str
    why: str = ""


def _spot_notice(notice: dict | None) -> bool:
    notice = notice or {}
    return notice.get("source") == "spot" and notice.get("action") in ("terminate", "stop", "hibernate")


def recovery_decision(status, instance_id: str, instance_state: str | None, *, now: float, restarts_so_far: int,
                      max_restarts: int, first_attempt: int = 0,
                      stale_after: float = HEARTBEAT_STALE_S) -> Relaunch | Wait | GiveUp | Done:
    """What the controller does now for a job that should be running on ``instance_id``.

    ``status``: the job's JobStatus (None before its agent wrote one); only the attempts from
    ``first_attempt`` on belong to this submission. ``instance_state``: EC2's state of the
    instance (None when EC2 no longer knows it). Relaunch when the instance running the job
    received a spot notice, stopped running, or stopped beating while not running; Done when
    the job ended on it; Wait otherwise. Pure."""
    ours = tuple(status.attempts[first_attempt:]) if status is not None else ()
    last = ours[-1] if ours else None
    # An attempt without an instance id ran where no metadata service answered: take it as here.
    here = last is not None and last.instance_id in (None, instance_id)
    if here and status.state in JOB_DONE:
        return Done(status.state, status.message)
    why = ""
    if instance_state is None or instance_state in MACHINE_GONE:
        why = f"instance {instance_id} is {instance_state or 'gone'}"
    elif here and _spot_notice(status.notice):
        notice = status.notice or {}
        why = f"spot notice ({notice.get('action')}) on {instance_id}"
    elif here and status.state == "interrupted":
        why = f"the job was interrupted on {instance_id}"
    elif here and instance_state != "running" and status.heartbeat is not None \
            and now - status.heartbeat > stale_after:
        why = f"no heartbeat from {instance_id} for {now - status.heartbeat:.0f}s and it is {instance_state}"
    if not why:
        if last is None or not here:
            return Wait(f"waiting for the job to start on {instance_id}")
        return Wait(f"the job is {status.state} on {instance_id}")
    if restarts_so_far >= max_restarts:
        return GiveUp(f"gave up after {restarts_so_far} recoveries: {why} (max_restarts {max_restarts})")
    return Relaunch(why)


def launch_backoff(failures: int, *, base: float = 1.0, cap: float = 30.0) -> float:
    """Seconds to wait after the ``failures``-th failed launch in a row (1, 2, 4 ... capped)."""
    return min(cap, base * 2 ** max(0, failures - 1))


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
