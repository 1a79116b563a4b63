"""Where each thing of a job lives in the store (the layout in DESIGN.md). Pure."""

from __future__ import annotations

import re

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def job_key(job_id: str) -> str:
    return f"jobs/{job_id}/job.json"


def status_key(job_id: str) -> str:
    return f"jobs/{job_id}/status.json"


def lease_key(job_id: str) -> str:
    return f"jobs/{job_id}/lease.json"


def group_key(job_id: str) -> str:
    """The job's Auto Scaling group and its rules (runctl.agent.group_record)."""
    return f"jobs/{job_id}/group.json"


def boot_failures_key(job_id: str) -> str:
    """The group's instances, in a row, whose agent never started."""
    return f"jobs/{job_id}/boot-failures.json"


def recoveries_key(job_id: str) -> str:
    """One record per replacement of the job's instance."""
    return f"jobs/{job_id}/recoveries.json"


# -- jobs of several machines (runctl.agent.membership, rendezvous; interruptions.job_stop) --
def nodes_prefix(job_id: str) -> str:
    """Where every machine of a job registers itself (one record per instance)."""
    return f"jobs/{job_id}/nodes/"


def node_key(job_id: str, instance_id: str) -> str:
    """One machine's membership record: its address and heartbeat."""
    return f"{nodes_prefix(job_id)}{instance_id}.json"


def rendezvous_key(job_id: str) -> str:
    """Which machine hosts torchrun's c10d rendezvous, and its epoch."""
    return f"jobs/{job_id}/rendezvous.json"


def job_stop_key(job_id: str) -> str:
    """A request that every machine of the job stop its script (one per rendezvous epoch)."""
    return f"jobs/{job_id}/stop.json"


def checkpoints_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints/"


def logs_prefix(job_id: str, attempt: int, node: str | None = None) -> str:
    """An attempt's log chunks: the host's (the job's one machine, or its rendezvous host), or
    those of ``node``, another machine of a job of several (apart, so that neither listing
    sees the other's)."""
    if node is None:
        return f"jobs/{job_id}/logs/{attempt}/"
    return f"{node_logs_prefix(job_id)}{node}/{attempt}/"


def node_logs_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/node-logs/"


# -- the AWS backend ---------------------------------------------------------------------
def assignment_key(instance_id: str) -> str:
    """Which job the resident agent on this instance should run (written by `aws train`)."""
    return f"instances/{instance_id}/assignment.json"


def instance_agent_key(instance_id: str) -> str:
    """The resident agent's heartbeat and state on this instance."""
    return f"instances/{instance_id}/agent.json"


def code_blob_key(sha256: str) -> str:
    return f"code/blobs/{sha256}"


def code_tree_key(tree_id: str) -> str:
    return f"code/trees/{tree_id}.json"


def wheel_key(filename: str) -> str:
    return f"dist/{filename}"


# -- built environments (runctl.environment), shared by every job of the store ------------
def env_archive_key(env_key: str) -> str:
    """A built environment, packed (tar, gzip): reused by any job whose inputs hash the same."""
    return f"envs/{env_key}.tar.gz"


def env_record_key(env_key: str) -> str:
    """What the archive holds and its size and sha256; written after the archive."""
    return f"envs/{env_key}.json"
