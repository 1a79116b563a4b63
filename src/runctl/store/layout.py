"""Where each thing of a job lives in the store (the layout in DESIGN.md). Pure."""

from __future__ import annotations

import re

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def job_key(job_id: str) -> str:
    return f"jobs/{job_id}/job.json"


def status_key(job_id: str) -> str:
    return f"jobs/{job_id}/status.json"


def lease_key(job_id: str) -> str:
    return f"jobs/{job_id}/lease.json"


def checkpoints_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints/"


def logs_prefix(job_id: str, attempt: int) -> str:
    return f"jobs/{job_id}/logs/{attempt}/"
