"""The cancel marker: ``jobs/<id>/cancel.json``, written by ``runctl aws cancel``. Agents
stop the job (and do not start it); recovery controllers stop relaunching it."""

from __future__ import annotations

import json
import time

from runctl.errors import NotFoundError
from runctl.store import layout


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
