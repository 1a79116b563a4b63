"""Which agent may run the job now: lease.json, taken and renewed with conditional writes.

A lease names its holder and an expiry. It can be taken when there is none, when it was
released, when it expired, or when its holder is a dead process on this very host (an
agent killed with SIGKILL need not make the next run wait for the expiry).

``wait_acquire`` polls instead of failing while a live holder has it: the agent on a
replacement instance waits so for the dying one's final upload. ``may_take_over(record)``
lets the caller say a holder is as good as gone (its machine's notice deadline passed).

Fencing. Every new holder takes the next ``generation``; the snapshots it commits record it
(``fence()`` proves the lease with a conditional write right before a manifest is written).
Every write carries a fresh ``token``: when a conditional write fails ambiguously (its
response was lost, or a retry of it met our own write and got 412), the lease is read back,
and the token says whether our write landed. A lease another holder took is ``lost`` for
good: ``renew`` and ``fence`` raise LeaseLost, and the agent must stop its script.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from runctl.errors import LeaseLost, NotFoundError, PreconditionFailed, RunctlError, StoreError, UsageError
from runctl.store import layout

log = logging.getLogger(__name__)


@dataclass
class LeaseRecord:
    holder: str
    host: str
    pid: int
    expires: float
    released: bool = False
    generation: int = 0  # one more at every change of holder; 0: written by an older runctl
    token: str = ""  # unique per write: tells, after an ambiguous write, whether it landed


def parse_record(data: bytes, where: str) -> LeaseRecord:
    """lease.json's bytes as a LeaseRecord; StoreError when they are not a lease."""
    try:
        raw = json.loads(data)
        names = {f.name for f in dataclasses.fields(LeaseRecord)}
        record = LeaseRecord(**{k: v for k, v in raw.items() if k in names})
    except (ValueError, TypeError, AttributeError) as exc:
        raise StoreError(f"{where} is not a lease record ({exc}); delete it if no agent runs the job") from exc
    if not isinstance(record.generation, int) or not isinstance(record.expires, (int, float)):
        raise StoreError(f"{where} is not a lease record (bad generation or expires); "
                         "delete it if no agent runs the job")
    return record


def holder_is_gone(record: LeaseRecord, now: float, host: str) -> bool:
    """Whether a lease may be taken over. Pure but for the process-table look-up."""
    if record.released or record.expires <= now:
        return True
    return record.host == host and not psutil.pid_exists(record.pid)


def must_stop_at(held_until: float, ttl: float) -> float:
    """When an agent that could not renew its lease stops its script: half a TTL before the
    lease it last proved runs out, so the script's grace and the SIGKILL fit before another
    agent may take the job over."""
    return held_until - ttl / 2


def must_kill_at(held_until: float, ttl: float) -> float:
    """The latest SIGKILL of a script stopped for its lease: a quarter TTL before it runs out."""
    return held_until - ttl / 4


class _NotWritten(Exception):
    """A lease write that did not land; ``current`` is the lease as read back after it."""

    def __init__(self, cause: StoreError, current: tuple[LeaseRecord, str] | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.current = current


class Lease:
    def __init__(self, store, job_id: str, *, ttl: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._key = layout.lease_key(job_id)
        self.job_id = job_id
        self.ttl = ttl
        self._clock = clock
        self.host = socket.gethostname()
        self.holder = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.generation = 0  # of the lease we hold
        self.held_until = 0.0  # the expiry our last write known to have landed gave the lease
        self.lost = False  # another holder took it: nothing more may be written for the job
        self._lost_to = ""  # who holds it instead, for the messages
        self._etag: str | None = None
        # The heartbeat renews and a commit's fence renews, from two threads: one write at a
        # time, else our own second write would fail on our first and look like a takeover.
        self._lock = threading.RLock()

    def _read(self) -> tuple[LeaseRecord, str] | None:
        try:
            blob = self._store.read(self._key)
        except NotFoundError:
            return None
        return parse_record(blob.data, f"the lease of job {self.job_id} ({self._key})"), blob.etag

    def _write(self, generation: int, *, released: bool = False, **condition) -> None:
        """Write our record conditionally. After a failure, read the lease back: when it
        holds this write's token the write landed all the same (its response was lost, or
        a retry met it and got 412), so adopt it; else raise _NotWritten. A failing
        read-back raises its StoreError: whether the write landed stays unknown."""
        record = LeaseRecord(self.holder, self.host, os.getpid(), self._clock() + self.ttl, released,
                             generation, uuid.uuid4().hex)
        try:
            etag = self._store.write(self._key, json.dumps(dataclasses.asdict(record)).encode(), **condition)
        except StoreError as exc:
            current = self._read()
            if current is None or current[0].token != record.token:
                raise _NotWritten(exc, current) from exc
            log.info("job %s: the lease write landed although it reported: %s", self.job_id, exc)
            etag = current[1]
        self._etag, self.generation, self.held_until = etag, generation, record.expires

    def acquire(self, may_take_over: Callable[[LeaseRecord], bool] | None = None) -> None:
        """Take the lease or raise UsageError naming who holds it. Taking it again under the
        same holder (this object) renews it."""
        with self._lock:
            found = self._read()
            try:
                if found is None:
                    self._write(1, if_none_match=True)
                    self.lost = False
                    return
                current, etag = found
                ours = current.holder == self.holder and not current.released
                if not (ours or holder_is_gone(current, self._clock(), self.host)
                        or (may_take_over is not None and may_take_over(current))):
                    raise UsageError(
                        f"job {self.job_id} is already running (agent {current.holder}); "
                        "wait for it, stop it, or use another --job-id"
                    )
                self._write(current.generation if ours else current.generation + 1, if_match=etag)
                self.lost = False
            except _NotWritten as exc:
                if isinstance(exc.cause, PreconditionFailed):
                    raise UsageError(f"job {self.job_id} was just taken by another agent; "
                                     "use another --job-id") from exc.cause
                raise exc.cause from None

    def wait_acquire(self, timeout: float, *, poll: float = 0.5,
                     may_take_over: Callable[[LeaseRecord], bool] | None = None,
                     give_up: Callable[[], str | None] = lambda: None,
                     sleep: Callable[[float], None] = time.sleep) -> float:
        """Take the lease, waiting (polling every ``poll`` s) while a live holder has it, at
        most ``timeout`` s (then UsageError). ``give_up()`` returning a reason stops the wait
        (UsageError with it). Returns the seconds waited."""
        started = self._clock()
        while True:
            try:
                self.acquire(may_take_over)
                return self._clock() - started
            except UsageError as exc:
                reason = give_up()
                if reason:
                    raise UsageError(f"job {self.job_id}: stopped waiting for its lease: {reason}") from exc
                if self._clock() - started >= timeout:
                    raise UsageError(f"{exc} (waited {timeout:g}s for it)") from exc
                sleep(poll)

    def renew(self) -> None:
        """Extend the lease by a TTL. LeaseLost once another holder has it; StoreError when
        the store did not answer (the lease stays ours until ``held_until``: try again)."""
        with self._lock:
            if self.lost:
                raise LeaseLost(f"job {self.job_id}: this agent lost its lease; it is held by {self._lost_to} now")
            if self._etag is None:
                return
            for _ in range(2):
                try:
                    self._write(self.generation, if_match=self._etag)
                    return
                except _NotWritten as exc:
                    current, cause = exc.current, exc.cause
                if current is not None and current[1] == self._etag:
                    raise cause from None  # our last write is still the lease: not renewed, not lost
                if current is None or not self._written_by_us(current[0]):
                    break
                # An earlier write of ours landed although its answer, and the read-back after
                # it, were lost: the lease is still ours, under that write's etag. Renew from there.
                self._etag, self.held_until = current[1], max(self.held_until, current[0].expires)
            else:
                raise cause from None
            self.lost, self._etag = True, None
            self._lost_to = current[0].holder if current is not None else "nobody (lease.json is gone)"
            raise LeaseLost(f"job {self.job_id}: this agent lost its lease; it is held by {self._lost_to} now") \
                from cause

    def _written_by_us(self, record: LeaseRecord) -> bool:
        """The holder names this Lease object (its uuid), so only our own writes carry it."""
        return record.holder == self.holder and not record.released

    def rise_above(self, generation: int) -> None:
        """Make our generation higher than ``generation`` (that of the job's latest snapshot).
        A new holder's is already; but a lease.json deleted by hand restarts at 1, below the
        snapshots, and every commit of ours would be refused as stale."""
        with self._lock:
            if self.generation > generation:
                return
            if self._etag is None:
                raise LeaseLost(f"job {self.job_id}: this agent holds no lease")
            previous, self.generation = self.generation, generation + 1
            try:
                self.renew()
            except RunctlError:
                self.generation = previous
                raise

    def fence(self) -> int:
        """Prove, with a conditional write, that this agent holds the lease right now, and
        return its generation; LeaseLost or StoreError when it cannot. Called right before a
        snapshot's manifest is written."""
        with self._lock:
            if self._etag is None and not self.lost:
                raise LeaseLost(f"job {self.job_id}: this agent holds no lease")
            self.renew()
            return self.generation

    def release(self) -> None:
        """Mark the lease released, so that the next agent need not wait for its expiry.
        StoreError when the store did not answer (the lease stays ours: try again). Nothing
        is written once another holder has it, or when it is released already."""
        with self._lock:
            if self._etag is None:
                return
            for _ in range(2):
                try:
                    self._write(self.generation, released=True, if_match=self._etag)
                    break
                except _NotWritten as exc:
                    current, cause = exc.current, exc.cause
                if current is not None and current[1] == self._etag:
                    raise cause from None  # our last write is still the lease: not released yet
                if current is None or not self._written_by_us(current[0]):
                    break  # gone, released by an earlier try of ours, or another holder's now
                # An earlier write of ours landed although its answer, and the read-back after
                # it, were lost: the lease is still ours, under that write's etag. Release it there.
                self._etag = current[1]
                self.generation = max(self.generation, current[0].generation)
            else:
                raise cause from None
            self._etag = None
