"""The cancel marker: ``jobs/<id>/cancel.json``, written by ``runctl aws cancel``. Agents
stop the job (and do not start it: ``CancelSource``); recovery controllers stop relaunching it."""

from __future__ import annotations

import json
import logging
import time

from runctl.errors import NotFoundError, RunctlError
from runctl.store import layout

log = logging.getLogger(__name__)


def cancel_key(job_id: str) -> str:
    return f"{layout.job_prefix(job_id)}cancel.json"


def mark_cancelled(store, job_id: str, *, by: str = "runctl aws cancel", clock=time.time) -> dict:
    record = {"cancelled": clock(), "by": by}
    store.write(cancel_key(job_id), json.dumps(record).encode())
    return record


def cancelled(store, job_id: str) -> dict | None:
    """The cancel record, or None when the job was not cancelled."""
    try:
        return json.loads(store.read(cancel_key(job_id)).data)
    except NotFoundError:
        return None


class CancelSource:
    """An interruption source that stops the job for good once ``runctl aws cancel`` marked it
    cancelled in the store (looked at every ``interval`` seconds)."""

    def __init__(self, store, job_id: str, interval: float = 1.0) -> None:
        self._store, self._job_id, self._interval = store, job_id, interval
        self._next = 0.0
        self._fired = False

    def attempt_started(self, attempt: int, now: float) -> None:
        pass

    def poll(self, now: float):
        from runctl.models import InterruptionNotice

        if self._fired or now < self._next:
            return None
        self._next = now + self._interval
        try:
            record = cancelled(self._store, self._job_id)
        except RunctlError as exc:
            log.debug("cannot read the cancel marker: %s", exc)
            return None
        if record is None:
            return None
        self._fired = True
        return InterruptionNotice("user", "stop-job", now, detail=f"cancelled by {record.get('by', 'runctl')}",
                                  restartable=False)

    def close(self) -> None:
        pass
