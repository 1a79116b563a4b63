"""Which machines a job of several nodes has now: one record per instance in the store.

Every agent of the job registers ``jobs/<id>/nodes/<instance-id>.json`` (its instance id,
its private address, the time of its heartbeat, the rendezvous epoch it saw, and the epoch
whose torchrun failed on it, if one did) and
renews it with its heartbeat; a machine that leaves deletes its record. ``live_nodes``
lists the records younger than a TTL: a record older than that is a machine that is gone
(killed, or its agent hung), whether or not its record was deleted.

Used by ``--nodes`` (``runctl.agent.multinode``): each agent registers before it starts
torchrun, renews from a heartbeat thread, and waits until ``live_nodes`` counts the job's N
machines; ``runctl.agent.rendezvous`` asks it whether the rendezvous host is still alive.

Each machine writes its own record only, so the writes need no condition. The clock is
the caller's: a test ages a record by moving the time, not by sleeping.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from runctl.errors import NotFoundError, StoreError, UsageError
from runctl.models import Record
from runctl.store import layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeRecord(Record):
    instance_id: str
    address: str  # the private address the other machines reach it at
    heartbeat: float  # epoch seconds of its last renewal, by its own clock
    epoch: int  # the rendezvous epoch it last saw (0: none yet)
    failed_epoch: int | None = None  # the epoch whose torchrun failed here, if one did


def parse_node(data: bytes, where: str) -> NodeRecord:
    """A membership record's bytes as a NodeRecord; StoreError when they are not one."""
    try:
        record = NodeRecord.from_dict(json.loads(data))
    except (ValueError, TypeError, AttributeError) as exc:
        raise StoreError(f"{where} is not a membership record ({exc})") from exc
    if not isinstance(record.heartbeat, (int, float)) or not isinstance(record.epoch, int) \
            or not isinstance(record.failed_epoch, (int, type(None))):
        raise StoreError(f"{where} is not a membership record (bad heartbeat or epoch)")
    return record


def is_live(record: NodeRecord, now: float, ttl: float) -> bool:
    """Whether the record's machine counts as present: renewed less than ``ttl`` s ago."""
    return now - record.heartbeat < ttl


def node_records(store, job_id: str) -> list[NodeRecord]:
    """Every membership record of the job, stale or not, by instance id: one listing, then
    one read per machine. A record that is not one (written by hand, or half a migration)
    counts as a machine gone: one bad record must not stop the others. StoreError when the
    store does not answer."""
    found = []
    for info in store.list(layout.nodes_prefix(job_id)):
        try:
            data = store.read(info.key).data
        except NotFoundError:
            continue  # it left between the listing and the read
        try:
            found.append(parse_node(data, info.key))
        except StoreError as exc:
            log.warning("job %s: %s; counted as gone", job_id, exc)
    return sorted(found, key=lambda r: r.instance_id)


def live_nodes(store, job_id: str, now: float, ttl: float) -> list[NodeRecord]:
    """The job's machines renewed less than ``ttl`` s before ``now`` (``node_records``'s)."""
    return [record for record in node_records(store, job_id) if is_live(record, now, ttl)]


class Membership:
    """This machine's record in its job: ``register`` (or renew), ``leave``."""

    def __init__(self, store, job_id: str, instance_id: str, address: str, *,
                 clock: Callable[[], float]) -> None:
        if not layout.JOB_ID_PATTERN.match(instance_id):
            raise UsageError(f"{instance_id!r} cannot name a machine of job {job_id}: use letters, digits, '.', "
                             "'_' and '-'")
        self._store = store
        self._key = layout.node_key(job_id, instance_id)
        self._clock = clock
        self.instance_id = instance_id
        self.address = address
        self.failed_epoch: int | None = None  # carried by every renewal once set

    def register(self, epoch: int) -> NodeRecord:
        """Write (or renew) this machine's record with the time now and the rendezvous epoch
        it sees; returns it. StoreError when the store does not answer (try again: the record
        last written stays valid until its TTL)."""
        record = NodeRecord(self.instance_id, self.address, self._clock(), epoch, self.failed_epoch)
        self._store.write(self._key, json.dumps(record.to_dict()).encode())
        return record

    def leave(self) -> None:
        """Delete this machine's record, so the others need not wait for it to go stale."""
        self._store.delete([self._key])
