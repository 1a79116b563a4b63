"""Jobs for resident agents: what `runctl aws train` writes and the agent on the instance reads.

``instances/<id>/assignment.json`` names the job the agent on that instance should run and
where it is with it::

    assigned  written by `runctl aws train` (job.json is in the store already)
    running   the agent took it (a conditional write on the version it read)
    done      the agent ran it; job_state says how the job ended
    failed    the agent could not run it (message says why; the job itself may be fine)

Every agent-side change is a conditional write on the version it read, so a new assignment
written meanwhile is never overwritten. `runctl aws train` assigns with ``claim_instance``:
only over the version it judged free, so of two commands racing for one instance one wins
and the other hears that it lost. ``instances/<id>/agent.json`` is the agent's
heartbeat: its state (idle, running, stopping, stopped), its job and its version.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from runctl.errors import NotFoundError, PreconditionFailed
from runctl.models import JobSpec, Record
from runctl.store import layout

RUNNABLE = ("assigned", "running")
FINISHED = ("done", "failed")


@dataclass(frozen=True)
class Assignment(Record):
    job_id: str
    state: str  # assigned, running, done, failed
    assigned: float
    assignment_id: str
    job_state: str | None = None  # the job's final state, once done
    message: str = ""
    updated: float | None = None


def read_assignment(store, instance_id: str) -> tuple[Assignment, str] | None:
    """The instance's assignment and its version (etag), or None."""
    try:
        blob = store.read(layout.assignment_key(instance_id))
    except NotFoundError:
        return None
    return Assignment.from_dict(json.loads(blob.data)), blob.etag


def _encode(assignment: Assignment) -> bytes:
    return json.dumps(assignment.to_dict(), indent=1, sort_keys=True).encode()


def write_assignment_if(store, instance_id: str, assignment: Assignment, etag: str) -> str:
    """Write ``assignment`` unless the stored one changed since ``etag``
    (PreconditionFailed). Returns the new etag."""
    return store.write(layout.assignment_key(instance_id), _encode(assignment), if_match=etag)


def write_job_spec(store, spec: JobSpec) -> None:
    """job.json: the spec the agent runs (replaced when the job is submitted again)."""
    store.write(layout.job_key(spec.job_id), json.dumps(spec.to_dict(), indent=1, sort_keys=True).encode())


def read_job_spec(store, job_id: str) -> JobSpec:
    """Raises NotFoundError when the job has no job.json."""
    return JobSpec.from_dict(json.loads(store.read(layout.job_key(job_id)).data))


def _new_assignment(job_id: str, now: float) -> Assignment:
    return Assignment(job_id, "assigned", now, uuid.uuid4().hex, updated=now)


def assign_job(store, instance_id: str, job_id: str, *, clock: Callable[[], float] = time.time) -> Assignment:
    """Tell the agent on ``instance_id`` to run ``job_id`` (its job.json must be in the store)."""
    assignment = _new_assignment(job_id, clock())
    store.write(layout.assignment_key(instance_id), _encode(assignment))
    return assignment


def claim_instance(store, instance_id: str, job_id: str, *, judged: str | None,
                   clock: Callable[[], float] = time.time) -> Assignment:
    """``assign_job``, but only over the assignment the caller judged free: ``judged`` is the
    version (etag) it read, None when there was none. PreconditionFailed when the
    assignment changed since. A conditional write can fail although it landed (a retried
    request finds its own first try): the assignment read back decides, by its id."""
    assignment = _new_assignment(job_id, clock())
    condition = {"if_none_match": True} if judged is None else {"if_match": judged}
    try:
        store.write(layout.assignment_key(instance_id), _encode(assignment), **condition)
    except PreconditionFailed:
        found = read_assignment(store, instance_id)
        if found is None or found[0].assignment_id != assignment.assignment_id:
            raise
    return assignment


def remote_spec(job_id: str, command: tuple[str, ...] | list[str], store_url: str, *, code_tree: str | None,
                checkpoint_dir: str | None = None, **settings) -> JobSpec:
    """The spec of a job for a resident agent. Its workdir is left empty, and so is its
    checkpoint folder unless ``checkpoint_dir`` names one relative to the job's code folder:
    the agent chooses them on the instance (``runctl.agent.resident.local_spec``).
    ``settings``: any other JobSpec field (grace_period, max_restarts, sync_interval ...)."""
    return JobSpec(job_id=job_id, command=tuple(command), store_url=store_url, checkpoint_dir=checkpoint_dir or "",
                   workdir="", code_tree=code_tree, **settings)


def submit_job(store, instance_id: str, spec: JobSpec, *, clock: Callable[[], float] = time.time) -> Assignment:
    """job.json, then the assignment: what `runctl aws train` does after uploading the code."""
    write_job_spec(store, spec)
    return assign_job(store, instance_id, spec.job_id, clock=clock)


def with_state(assignment: Assignment, state: str, now: float, **changes) -> Assignment:
    return replace(assignment, state=state, updated=now, **changes)


def read_agent_record(store, instance_id: str) -> dict | None:
    """The agent's last heartbeat record on ``instance_id`` (see ``runctl.agent.resident``)."""
    try:
        return json.loads(store.read(layout.instance_agent_key(instance_id)).data)
    except NotFoundError:
        return None
