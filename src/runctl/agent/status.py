"""The job's status.json, kept by the agent and read by every other command."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable

from runctl.errors import NotFoundError, StoreError
from runctl.models import Attempt, JobStatus
from runctl.store import layout


#: States in which no agent works on the job any more.
FINAL_STATES = frozenset({"completed", "failed", "stopped", "interrupted"})

#: A heartbeat older than this means the agent is gone (it beats every few seconds).
STALE_AFTER_S = 30.0


def agent_gone(status: JobStatus, now: float) -> bool:
    """The job claims to be running but its agent stopped beating (killed, machine lost)."""
    return status.state not in FINAL_STATES and (status.heartbeat or 0) < now - STALE_AFTER_S


def read_status(store, job_id: str) -> JobStatus | None:
    try:
        return JobStatus.from_dict(json.loads(store.read(layout.status_key(job_id)).data))
    except NotFoundError:
        return None


def close_lost(previous: JobStatus) -> tuple[Attempt, ...]:
    """The job's attempts, the last one closed as "lost" if nobody ever closed it: its agent
    died with its machine (or was SIGKILLed), so it ended at its last heartbeat at the latest."""
    attempts = previous.attempts
    if attempts and attempts[-1].ended is None:
        last = attempts[-1]
        ended = max(last.started, previous.heartbeat or last.started)
        attempts = (*attempts[:-1], dataclasses.replace(last, ended=ended, reason="lost"))
    return attempts


def list_job_ids(store) -> list[str]:
    return store.list_dirs("jobs/")


class StatusBook:
    """An in-memory JobStatus, saved to the store on every change and each heartbeat."""

    def __init__(self, store, status: JobStatus, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._status = status
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def status(self) -> JobStatus:
        return self._status

    def update(self, **changes) -> JobStatus:
        with self._lock:
            self._status = dataclasses.replace(self._status, **changes)
            self._save()
            return self._status

    def update_attempt(self, **changes) -> Attempt:
        """Change the current (last) attempt."""
        with self._lock:
            attempts = list(self._status.attempts)
            attempts[-1] = dataclasses.replace(attempts[-1], **changes)
            self._status = dataclasses.replace(self._status, attempts=tuple(attempts))
            self._save()
            return attempts[-1]

    def add_attempt(self, attempt: Attempt) -> None:
        with self._lock:
            self._status = dataclasses.replace(self._status, attempts=(*self._status.attempts, attempt))
            self._save()

    def heartbeat(self) -> None:
        with self._lock:
            self._save()

    def _save(self, attempts: int = 3, backoff_s: float = 0.5) -> None:
        """Write status.json, retrying a passing store error a few times before giving up."""
        self._status = dataclasses.replace(self._status, heartbeat=self._clock())
        data = json.dumps(self._status.to_dict(), indent=1, sort_keys=True).encode()
        for attempt in range(attempts):
            try:
                self._store.write(layout.status_key(self._status.job_id), data)
                return
            except StoreError:
                if attempt == attempts - 1:
                    raise
                time.sleep(backoff_s * 2**attempt)
