"""What a job that runs in an Auto Scaling group keeps in the store, beside status.json:

``jobs/<id>/group.json``          {"group": {name, launch_template_id, region, ...},
                                   "auto_resume", "max_restarts", "max_boot_failures",
                                   "boot_timeout_s", "submitted",
                                   "ended": {at, state, message, by} once the group is gone}
``jobs/<id>/boot-failures.json``  {"instances": [the group's instances, in a row, whose
                                   agent never started within the boot timeout]}
``jobs/<id>/recoveries.json``     {"recoveries": [one per replacement: the notice, when the
                                   replacement was requested, by which instance ...]}

Written by ``runctl aws run|train`` (group.json), the agents of the group's instances and
their boot watchdogs; read by every command, from any machine. Wall-clock (epoch) times.
"""

from __future__ import annotations

import json
import time

from runctl.errors import NotFoundError, PreconditionFailed
from runctl.store import layout


def read_group(store, job_id: str) -> dict | None:
    """The job's group.json, or None for a job that runs in no group."""
    try:
        return json.loads(store.read(layout.group_key(job_id)).data)
    except NotFoundError:
        return None


def write_group(store, job_id: str, record: dict) -> None:
    store.write(layout.group_key(job_id), json.dumps(record, indent=1, sort_keys=True).encode())


def mark_ended(store, job_id: str, state: str, message: str, *, by: str, clock=time.time) -> dict | None:
    """Record in group.json that the job's group is gone and why (the first to end it wins)."""
    record = read_group(store, job_id)
    if record is None or record.get("ended"):
        return record
    record["ended"] = {"at": clock(), "state": state, "message": message, "by": by}
    write_group(store, job_id, record)
    return record


def _update(store, key: str, change, empty: dict) -> dict:
    """Read-modify-write ``key`` with conditional writes, so two writers never lose a change."""
    for _ in range(20):
        try:
            blob = store.read(key)
            data, etag = json.loads(blob.data), blob.etag
        except NotFoundError:
            data, etag = json.loads(json.dumps(empty)), None
        change(data)
        encoded = json.dumps(data, indent=1, sort_keys=True).encode()
        try:
            if etag is None:
                store.write(key, encoded, if_none_match=True)
            else:
                store.write(key, encoded, if_match=etag)
            return data
        except PreconditionFailed:
            continue
    raise PreconditionFailed(f"{key} kept changing under 20 tries to update it")


def add_boot_failure(store, job_id: str, instance_id: str) -> int:
    """Count ``instance_id`` as a boot failure; the number of them in a row."""
    def change(data: dict) -> None:
        if instance_id not in data["instances"]:
            data["instances"].append(instance_id)

    return len(_update(store, layout.boot_failures_key(job_id), change, {"instances": []})["instances"])


def clear_boot_failures(store, job_id: str) -> None:
    """An agent started: the failures before it are no longer "in a row"."""
    store.delete([layout.boot_failures_key(job_id)])


def boot_failures(store, job_id: str) -> list[str]:
    try:
        return list(json.loads(store.read(layout.boot_failures_key(job_id)).data).get("instances", ()))
    except NotFoundError:
        return []


def add_recovery(store, job_id: str, entry: dict) -> None:
    def change(data: dict) -> None:
        data["recoveries"].append(entry)

    _update(store, layout.recoveries_key(job_id), change, {"recoveries": []})


def update_recovery(store, job_id: str, old_instance: str, **fields) -> None:
    """Complete the newest recovery record of ``old_instance`` (the one that lost it)."""
    def change(data: dict) -> None:
        for record in reversed(data["recoveries"]):
            if record.get("old_instance") == old_instance:
                record.update(fields)
                return

    _update(store, layout.recoveries_key(job_id), change, {"recoveries": []})


def read_recovery_list(store, job_id: str) -> list[dict]:
    try:
        return list(json.loads(store.read(layout.recoveries_key(job_id)).data).get("recoveries", ()))
    except NotFoundError:
        return []
