"""Which agent may run the job now: lease.json, taken and renewed with conditional writes.

A lease names its holder and an expiry. It can be taken when there is none, when it was
released, when it expired, or when its holder is a dead process on this very host (an
agent killed with SIGKILL need not make the next run wait for the expiry).

``wait_acquire`` polls instead of failing while a live holder has it: the agent on a
replacement instance waits so for the dying one's final upload. ``may_take_over(record)``
lets the caller say a holder is as good as gone (its machine's notice deadline passed).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from runctl.errors import NotFoundError, PreconditionFailed, UsageError
from runctl.store import layout


@dataclass
class LeaseRecord:
    holder: str
    host: str
    pid: int
    expires: float
    released: bool = False


def holder_is_gone(record: LeaseRecord, now: float, host: str) -> bool:
    """Whether a lease may be taken over. Pure but for the process-table look-up."""
    if record.released or record.expires <= now:
        return True
    return record.host == host and not psutil.pid_exists(record.pid)


class Lease:
    def __init__(self, store, job_id: str, *, ttl: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._key = layout.lease_key(job_id)
        self.job_id = job_id
        self.ttl = ttl
        self._clock = clock
        self.host = socket.gethostname()
        self.holder = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._etag: str | None = None

    def _record(self, released: bool = False) -> bytes:
        record = LeaseRecord(self.holder, self.host, os.getpid(), self._clock() + self.ttl, released)
        return json.dumps(record.__dict__).encode()

    def acquire(self, may_take_over: Callable[[LeaseRecord], bool] | None = None) -> None:
        """Take the lease or raise UsageError naming who holds it. Taking it again under the
        same holder (this object) renews it."""
        try:
            blob = self._store.read(self._key)
        except NotFoundError:
            blob = None
        try:
            if blob is None:
                self._etag = self._store.write(self._key, self._record(), if_none_match=True)
                return
            current = LeaseRecord(**json.loads(blob.data))
            ours = current.holder == self.holder and not current.released
            if not (ours or holder_is_gone(current, self._clock(), self.host)
                    or (may_take_over is not None and may_take_over(current))):
                raise UsageError(
                    f"job {self.job_id} is already running (agent {current.holder}); "
                    "wait for it, stop it, or use another --job-id"
                )
            self._etag = self._store.write(self._key, self._record(), if_match=blob.etag)
        except PreconditionFailed as exc:
            raise UsageError(f"job {self.job_id} was just taken by another agent; use another --job-id") from exc

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
        if self._etag is not None:
            self._etag = self._store.write(self._key, self._record(), if_match=self._etag)

    def release(self) -> None:
        if self._etag is not None:
            try:
                self._store.write(self._key, self._record(released=True), if_match=self._etag)
            except PreconditionFailed:
                pass  # someone took it over after our expiry: nothing of ours to release
            self._etag = None
