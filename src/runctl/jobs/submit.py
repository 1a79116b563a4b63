"""Submitting a job to AWS: its spec and rules to the store, then its Auto Scaling group.

After ``submit_group_job`` returns, nothing of the job depends on the process that called
it: the group keeps an instance running, each instance's agent runs or resumes the job from
the store, and the agent that sees the job end deletes the group
(``runctl.agent.group_member``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from runctl.agent import group_record as records
from runctl.agent.assignment import write_job_spec
from runctl.agent.cancellation import cancel_key
from runctl.agent.status import read_status
from runctl.backends.aws.autoscaling import group_name
from runctl.backends.aws.job_group import GroupRecord
from runctl.errors import UsageError
from runctl.models import JobSpec
from runctl.store import layout

#: States after which a submission runs the job again (resuming from its latest snapshot).
_RESUBMITTABLE = ("failed", "stopped", "interrupted")


@dataclass(frozen=True)
class GroupRules:
    """How the job's group is kept: what the agents read from group.json."""

    auto_resume: bool = True
    max_restarts: int = 3
    max_boot_failures: int = 3
    boot_timeout_s: float = 900.0


@dataclass(frozen=True)
class Submitted:
    job_id: str
    group: GroupRecord
    first_attempt: int  # attempts before this submission (their logs are not this run's)


def running_group(store, groups, job_id: str) -> str | None:
    """The name of the job's group when one is still there (the job runs)."""
    settings = records.read_group(store, job_id)
    if settings is None or settings.get("ended"):
        return None
    name = settings["group"]["name"]
    return name if groups.describe(name) is not None else None


def submit_group_job(store, groups, spec: JobSpec, launch, rules: GroupRules, *, subnet_ids: tuple[str, ...] = (),
                     clock: Callable[[], float] = time.time) -> Submitted:
    """Write the job's spec and rules, then create its group (``launch``: a LaunchSpec whose
    user data starts the job's agent). A job whose group still runs is refused."""
    job_id = spec.job_id
    running = running_group(store, groups, job_id)
    if running is not None:
        raise UsageError(f"job {job_id} runs already (group {running}); follow it with runctl aws watch {job_id}, "
                         f"cancel it with runctl aws cancel {job_id}, or give another --job-id")
    # A new run of the job: an old cancel marker or count of boot failures does not apply.
    store.delete([cancel_key(job_id), layout.boot_failures_key(job_id)])
    previous = read_status(store, job_id)
    if previous is not None and previous.state in _RESUBMITTABLE:
        again = dataclasses.replace(previous, state="pending", message="submitted again: resumes from its latest "
                                                                        "snapshot")
        store.write(layout.status_key(job_id), json.dumps(again.to_dict(), indent=1, sort_keys=True).encode())
    write_job_spec(store, spec)

    def write_rules(record: GroupRecord) -> None:
        # Before the group exists, so that its first agent finds them.
        records.write_group(store, job_id, {"group": record.to_dict(), "submitted": clock(),
                                            **dataclasses.asdict(rules)})

    # One instance per node: the group keeps all of them (min = max = desired).
    record = groups.create(launch, group_name(job_id), subnet_ids, size=spec.nodes, on_template=write_rules)
    return Submitted(job_id, record, len(previous.attempts) if previous is not None else 0)
