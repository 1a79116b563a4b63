"""Stopping every machine of a job at once: ``jobs/<id>/stop.json``, one per rendezvous epoch.

A machine that gets a spot notice (or whose agent sees its torchrun fail) stops its own
script, and the others must stop theirs too: their collectives would otherwise wait for
the lost peer until the process-group timeout, and their final snapshots would come late
or not at all. ``request_stop`` writes the stop of the current epoch (why, and by when the
snapshots must be durable: the notice's deadline); the first stop of an epoch wins, a
later one reads it. ``JobStopSource`` is an interruption source like the metadata
service's: its ``poll`` reads the record every ``interval`` seconds and reports the stop
once, so each agent stops its tree as it would at a spot notice (stop signal, grace, final
snapshot). The record of an earlier epoch is left in place and stops nothing: the job has
restarted since; the stop of a later epoch replaces it and carries it in its ``earlier``,
so that ``job_stops`` lists every stop (``runctl status``).

Used by ``--nodes``: an agent calls ``request_stop`` at a spot notice on its machine
(``runctl.agent.node_follower`` for a member, ``runctl.agent.node_epochs`` for the host) or
when a machine of its epoch is lost without a notice (``multinode.NodeStopSource``), and
every agent of the job watches a ``JobStopSource`` that follows its rendezvous epoch
(``runctl.agent.multinode.stop_source``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from runctl.errors import NotFoundError, PreconditionFailed, RunctlError, StoreError
from runctl.models import InterruptionNotice, Record
from runctl.store import layout

log = logging.getLogger(__name__)

#: How many records in a row ``request_stop`` reads before it gives up: each round but the
#: last ends with another machine's write, and one of the epoch ends the race.
_ROUNDS = 4


@dataclass(frozen=True)
class StopRecord(Record):
    epoch: int  # the rendezvous epoch this stop ends
    reason: str  # what made a machine ask, e.g. "spot notice on i-0abc"
    deadline: float | None  # epoch seconds by which the final snapshots must be durable; None: unknown
    requested: float | None = None  # epoch seconds of the notice that made a machine ask; None: not recorded
    # The stops of the epochs before, oldest first, without their own ``earlier``. Carried
    # over by the write that replaces them, so ``runctl status`` can list every stop at no
    # cost in the notice's path: no other write, no other read.
    earlier: tuple[StopRecord, ...] = ()


def _parse_stop(data: dict, key: str) -> StopRecord:
    try:
        record = StopRecord.from_dict(data)
        earlier = tuple(_parse_stop(entry, key) for entry in record.earlier)
    except (TypeError, AttributeError) as exc:
        raise StoreError(f"{key} is not a stop record ({exc}); delete it if no machine runs the job") from exc
    if not isinstance(record.epoch, int):
        raise StoreError(f"{key} is not a stop record (bad epoch); delete it if no machine runs the job")
    return dataclasses.replace(record, earlier=earlier)


def read_stop(store, job_id: str) -> tuple[StopRecord, str] | None:
    """The job's stop record and its etag; None when no stop was ever requested."""
    key = layout.job_stop_key(job_id)
    try:
        blob = store.read(key)
    except NotFoundError:
        return None
    try:
        data = json.loads(blob.data)
    except ValueError as exc:
        raise StoreError(f"{key} is not a stop record ({exc}); delete it if no machine runs the job") from exc
    return _parse_stop(data, key), blob.etag


def job_stops(store, job_id: str) -> list[StopRecord]:
    """Every stop of the job's machines, one per epoch, oldest first (without ``earlier``).
    StoreError when the store does not answer or the record is not one."""
    found = read_stop(store, job_id)
    if found is None:
        return []
    return [*found[0].earlier, dataclasses.replace(found[0], earlier=())]


def request_stop(store, job_id: str, epoch: int, reason: str, deadline: float | None, *,
                 requested: float | None) -> StopRecord:
    """Ask every machine of the job to stop the script of rendezvous ``epoch`` (``requested``:
    when its notice came); returns the stop that stands: this one when it is the first of
    the epoch, else the first (or one of a later epoch: this machine's epoch is over
    already). StoreError when the store does not answer, or when it failed and the
    read-back shows no stop of the epoch."""
    key = layout.job_stop_key(job_id)
    for _ in range(_ROUNDS):
        found = read_stop(store, job_id)
        if found is not None and found[0].epoch >= epoch:
            return found[0]
        earlier = () if found is None else (*found[0].earlier, dataclasses.replace(found[0], earlier=()))
        record = StopRecord(epoch, reason, deadline, requested, earlier)
        condition = {"if_none_match": True} if found is None else {"if_match": found[1]}
        try:
            store.write(key, json.dumps(record.to_dict()).encode(), **condition)
            return record
        except PreconditionFailed:
            continue  # another machine's stop came first, or our own write retried: read it
        except StoreError as exc:
            # The write may have landed all the same; if a stop of the epoch is there, ours or
            # another's, the stop is requested, which is all that matters.
            landed = read_stop(store, job_id)
            if landed is not None and landed[0].epoch >= epoch:
                log.info("job %s: the stop request landed although it reported: %s", job_id, exc)
                return landed[0]
            raise
    raise StoreError(f"job {job_id}: stop.json changed {_ROUNDS} times while epoch {epoch}'s stop was written; "
                     "try again")


class JobStopSource:
    """An interruption source that reports the stop of the job's current rendezvous epoch
    (``epoch()``) once, looking at the store every ``interval`` seconds. A stop of a later
    epoch stops too: an agent that has not seen the new epoch runs a script of an old one."""

    def __init__(self, store, job_id: str, epoch: Callable[[], int], *, interval: float = 1.0) -> None:
        self._store, self._job_id, self._epoch, self._interval = store, job_id, epoch, interval
        self._next = 0.0
        self._reported_epoch: int | None = None

    def attempt_started(self, attempt: int, now: float) -> None:
        pass  # a stop belongs to an epoch, not an attempt

    def poll(self, now: float) -> InterruptionNotice | None:
        epoch = self._epoch()
        if epoch == self._reported_epoch or now < self._next:
            return None
        self._next = now + self._interval
        try:
            found = read_stop(self._store, self._job_id)
        except RunctlError as exc:
            log.debug("job %s: cannot read the stop record: %s", self._job_id, exc)
            return None  # looked at again at the next interval
        if found is None or found[0].epoch < epoch:
            return None
        self._reported_epoch = epoch
        record = found[0]
        return InterruptionNotice("job-stop", "stop-job", now, deadline=record.deadline,
                                  detail=f"every machine of the job stops (epoch {record.epoch}): {record.reason}")

    def close(self) -> None:
        pass
