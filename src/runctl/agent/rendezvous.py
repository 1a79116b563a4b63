"""Which machine of a job hosts torchrun's c10d rendezvous: ``jobs/<id>/rendezvous.json``.

The record names one registered machine (instance id, address, port), an epoch, and the
token of the write that made it. Every agent of the job calls ``agree_on_host`` and gets
the same answer, the record in the store, and whether it names this machine:

- no record yet: every agent tries to create one naming itself, epoch 1, create-only
  (``if_none_match``); of agents racing exactly one wins, the others read its record;
- a record whose machine is no longer live (``runctl.agent.membership``: its record aged
  past the TTL or was deleted): any live agent replaces it with one naming itself, epoch
  + 1, on condition that the record is still the one it read (``if_match`` its etag); of
  agents racing one wins, the others read its record;
- a write that failed in a way that may have landed all the same (its answer was lost, or
  a retry of it met it and was answered 412) is decided by reading the record back: it
  landed when the record holds this write's token, as for the lease (``agent.lease``).

Used by ``--nodes`` (``runctl.agent.multinode``): each agent, once registered, calls it
before it starts torchrun with ``--rdzv-endpoint ADDRESS:PORT --rdzv-id <job>-<epoch>``
and ``is_host`` (``agent.torchrun.multinode_torchrun_argv``); the host's agent holds the
job's lease and commits the sharded snapshots.

After a stop of every machine (``runctl.interruptions.job_stop``: a spot notice on one of
them), the host moves the epoch itself with ``advance_epoch``: one more, on condition that
the record is still the one it holds (``if_match``), keeping itself as host on a new port.
It is the one writer because it is the one machine that outlives the stop by design (it
holds the lease and commits the final round); a machine that joins later (the group's
replacement) reads the new epoch, so that the stop of the old one stops nothing of it.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass

from runctl.agent.membership import NodeRecord, live_nodes
from runctl.errors import NotFoundError, PreconditionFailed, StoreError
from runctl.models import Record
from runctl.store import layout

log = logging.getLogger(__name__)

#: How many records in a row ``agree_on_host`` reads before it gives up. Each round but the
#: last ends with another agent's write; a winner is live, so two rounds settle any race.
_ROUNDS = 4


@dataclass(frozen=True)
class RendezvousRecord(Record):
    instance_id: str
    address: str
    port: int
    epoch: int  # 1 for the first host, one more at every change of host
    token: str  # unique per write: tells, after an ambiguous write, whether it landed


@dataclass(frozen=True)
class Rendezvous:
    """The agreed host, as every agent of the job reads it, and whether it is this machine."""

    record: RendezvousRecord
    is_host: bool

    @property
    def endpoint(self) -> str:
        """torchrun's ``--rdzv-endpoint``."""
        return f"{self.record.address}:{self.record.port}"


def parse_rendezvous(data: bytes, where: str) -> RendezvousRecord:
    """rendezvous.json's bytes as a record; StoreError when they are not one."""
    try:
        record = RendezvousRecord.from_dict(json.loads(data))
    except (ValueError, TypeError, AttributeError) as exc:
        raise StoreError(f"{where} is not a rendezvous record ({exc}); delete it if no machine runs the job") \
            from exc
    if not isinstance(record.epoch, int) or not isinstance(record.port, int):
        raise StoreError(f"{where} is not a rendezvous record (bad epoch or port); "
                         "delete it if no machine runs the job")
    return record


def read_rendezvous(store, job_id: str) -> tuple[RendezvousRecord, str] | None:
    """The job's rendezvous record and its etag; None when no host was chosen yet."""
    key = layout.rendezvous_key(job_id)
    try:
        blob = store.read(key)
    except NotFoundError:
        return None
    return parse_rendezvous(blob.data, f"the rendezvous of job {job_id} ({key})"), blob.etag


def agree_on_host(store, job_id: str, me: NodeRecord, port: int, *, now: float, ttl: float) -> Rendezvous:
    """The job's rendezvous host, chosen (or replaced, when its machine is gone) if need
    be; ``me`` is this machine's membership record (registered), ``port`` the one its
    rendezvous would listen on if it becomes the host. ``now`` and ``ttl`` judge the
    host's membership as ``live_nodes`` does. StoreError when the store does not answer, or
    when a write's fate stays unknown (its read-back failed too): call again."""
    for _ in range(_ROUNDS):
        found = read_rendezvous(store, job_id)
        if found is None:
            won = _try_write(store, job_id, RendezvousRecord(me.instance_id, me.address, port, 1, uuid.uuid4().hex),
                             read_etag=None)
        else:
            current, etag = found
            if current.instance_id == me.instance_id or any(
                    node.instance_id == current.instance_id for node in live_nodes(store, job_id, now, ttl)):
                return Rendezvous(current, current.instance_id == me.instance_id)
            log.info("job %s: rendezvous host %s (epoch %d) is gone; %s replaces it", job_id, current.instance_id,
                     current.epoch, me.instance_id)
            won = _try_write(store, job_id, RendezvousRecord(me.instance_id, me.address, port, current.epoch + 1,
                                                             uuid.uuid4().hex), read_etag=etag)
        if won is not None:
            return Rendezvous(won, True)
    raise StoreError(f"job {job_id}: the rendezvous host changed {_ROUNDS} times while {me.instance_id} looked; "
                     "try again")


def advance_epoch(store, job_id: str, held: RendezvousRecord, port: int) -> RendezvousRecord:
    """The host's move to the next epoch: ``held`` (the record it hosts) with epoch + 1 and
    ``port``, written on condition that the record is still ``held`` (its token). StoreError
    when the store does not answer or the record is no longer ``held`` (another machine
    replaced this host: it is not the host any more)."""
    found = read_rendezvous(store, job_id)
    if found is None or found[0].token != held.token:
        raise StoreError(f"job {job_id}: the rendezvous is no longer the one {held.instance_id} hosts "
                         f"(epoch {held.epoch}); it cannot move the epoch")
    record = RendezvousRecord(held.instance_id, held.address, port, held.epoch + 1, uuid.uuid4().hex)
    if _try_write(store, job_id, record, read_etag=found[1]) is None:
        raise StoreError(f"job {job_id}: the rendezvous changed while {held.instance_id} moved it past "
                         f"epoch {held.epoch}")
    log.info("job %s: rendezvous epoch %d -> %d (host %s)", job_id, held.epoch, record.epoch, held.instance_id)
    return record


def _try_write(store, job_id: str, record: RendezvousRecord, *, read_etag: str | None) -> RendezvousRecord | None:
    """Write ``record`` on condition that the rendezvous is still what was read
    (``read_etag``; None: nothing). The record when it landed; None when another agent's
    write came first (read again). A failed write is decided by the read-back: our token
    means it landed; the record as it was read means the store failed (its error is
    raised); anything else is another agent's write."""
    key = layout.rendezvous_key(job_id)
    condition = {"if_match": read_etag} if read_etag is not None else {"if_none_match": True}
    try:
        store.write(key, json.dumps(record.to_dict()).encode(), **condition)
        return record
    except StoreError as exc:
        current = read_rendezvous(store, job_id)
        if current is not None and current[0].token == record.token:
            log.info("job %s: the rendezvous write landed although it reported: %s", job_id, exc)
            return record
        unchanged = current[1] == read_etag if current is not None else read_etag is None
        if unchanged and not isinstance(exc, PreconditionFailed):
            raise
        return None
