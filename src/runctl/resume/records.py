"""What recovery keeps in the store, beside status.json (and the cancel marker,
``runctl.agent.cancellation``):

``jobs/<id>/recoveries.json``  {"instances": [every instance a controller launched for the job],
                                "current": the instance the job should run on now,
                                "recoveries": [one record per relaunch: notice_seen,
                                launch_requested, launched instance id/type/az, error ...]}

Wall-clock (epoch) times throughout. recoveries.json is written with conditional writes, so
two controllers of one job cannot both relaunch it for the same notice.
"""

from __future__ import annotations

import json

from runctl.errors import NotFoundError
from runctl.store import layout


def recoveries_key(job_id: str) -> str:
    return f"{layout.job_prefix(job_id)}recoveries.json"


def read_recoveries(store, job_id: str) -> tuple[dict, str | None]:
    """The job's recovery book and its etag (None when there is none yet)."""
    try:
        blob = store.read(recoveries_key(job_id))
    except NotFoundError:
        return {"instances": [], "current": None, "recoveries": []}, None
    return json.loads(blob.data), blob.etag


def write_recoveries(store, job_id: str, book: dict, etag: str | None) -> str:
    """Write the book unless someone else changed it since ``etag`` (PreconditionFailed)."""
    data = json.dumps(book, indent=1, sort_keys=True).encode()
    if etag is None:
        return store.write(recoveries_key(job_id), data, if_none_match=True)
    return store.write(recoveries_key(job_id), data, if_match=etag)
