"""Cancelling a job that runs in its Auto Scaling group, from any machine.

The cancel marker goes to the store first: the agent running the job stops the script
(signal, grace, final snapshot) and deletes the group; a replacement that boots meanwhile
sees the marker and ends the group instead of starting. ``cancel_group_job`` waits for that,
up to ``timeout``; then it deletes the group itself (no agent may be running: a replacement
still booting, or an instance lost) and records the job as stopped. Nothing is left running
either way.

``cancel_job`` is the whole of ``runctl aws cancel``: the above when the job has a group (only
the marker otherwise, for a job ``aws train`` sent to an instance), then every instance still
tagged with the job is terminated through the compute contract, and the job is recorded as
stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from runctl.agent import group_record as records
from runctl.agent.cancellation import mark_cancelled
from runctl.agent.group_member import end_group
from runctl.agent.status import FINAL_STATES, STALE_AFTER_S, read_status
from runctl.backends.instances import terminate_tagged
from runctl.store import layout

CANCELLED = "cancelled (runctl aws cancel)"


@dataclass(frozen=True)
class CancelResult:
    job_id: str
    by_agent: bool  # the job's agent stopped it (its final snapshot made) before the timeout
    state: str


def _settled(store, job_id: str, now: float) -> bool:
    """The group is gone and no agent works on the job any more."""
    settings = records.read_group(store, job_id) or {}
    status = read_status(store, job_id)
    idle = status is None or status.state in FINAL_STATES or (status.heartbeat or 0) < now - STALE_AFTER_S
    return bool(settings.get("ended")) and idle


def cancel_group_job(store, job_id: str, groups, *, timeout: float = 150.0, poll: float = 0.5,
                     clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> CancelResult:
    mark_cancelled(store, job_id, clock=clock)
    deadline = clock() + timeout
    by_agent = False
    while clock() < deadline:
        if _settled(store, job_id, clock()):
            by_agent = True
            break
        sleep(poll)
    end_group(store, job_id, groups, "stopped", CANCELLED, by="runctl aws cancel", clock=clock)
    return CancelResult(job_id, by_agent, _record_stopped(store, job_id))


def _record_stopped(store, job_id: str) -> str:
    """Record a job that has not ended yet as stopped; its state now."""
    status = read_status(store, job_id)
    if status is not None and status.state not in ("completed", "failed", "stopped"):
        stopped = dataclasses.replace(status, state="stopped", message=CANCELLED)
        store.write(layout.status_key(job_id), json.dumps(stopped.to_dict(), indent=1, sort_keys=True).encode())
        status = stopped
    return status.state if status is not None else "stopped"


@dataclass(frozen=True)
class Cancelled:
    job_id: str
    stopped_by_agent: bool | None  # None: the job had no group (``aws train``), no agent was waited for
    terminated: tuple[str, ...]  # the instances still tagged with the job, terminated here
    state: str


def cancel_job(store, job_id: str, groups, compute, *, timeout: float = 150.0, poll: float = 0.5,
               waiting: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.time,
               sleep: Callable[[float], None] = time.sleep) -> Cancelled:
    """Cancel ``job_id`` and leave nothing of it running. ``groups``: ``region -> JobGroups``;
    ``compute``: the compute contract of the job's region; ``waiting()`` is called before
    waiting for the job's agent (when it has a group)."""
    by_agent = None
    if records.read_group(store, job_id) is not None:
        waiting()
        by_agent = cancel_group_job(store, job_id, groups, timeout=timeout, poll=poll, clock=clock,
                                    sleep=sleep).by_agent
    else:
        mark_cancelled(store, job_id, clock=clock)
    terminated = tuple(i.instance_id for i in terminate_tagged(compute, job=job_id))
    return Cancelled(job_id, by_agent, terminated, _record_stopped(store, job_id))
