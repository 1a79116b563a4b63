"""The life of runctl's instances over any ``Compute``: waiting for a state, requiring a
running one, and terminating only what runctl launched (tag ``runctl:created``).

Pure of any cloud: a test runs it against ``runctl.testing.FakeCompute`` with a fake clock;
``runctl aws wait|status|terminate|train|cancel`` run it against EC2.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from runctl.backends.aws.launch import TAG_CREATED, has_runctl_tags
from runctl.backends.compute import GONE, Compute
from runctl.errors import CloudError, UsageError
from runctl.models import InstanceInfo


def not_running_message(info: InstanceInfo) -> str:
    """Why ``info`` cannot take a command now, and what to do about it."""
    iid = info.instance_id
    if info.state in GONE:
        return f"instance {iid} is {info.state}; launch a new one with runctl aws create"
    if info.state in ("stopped", "stopping"):
        return f"instance {iid} is {info.state}; start it with runctl aws start {iid}"
    return f"instance {iid} is {info.state}, not running yet; wait for it with runctl aws wait {iid}"


def require_running(compute: Compute, instance_id: str) -> InstanceInfo:
    info = compute.describe(instance_id)
    if info.state != "running":
        raise CloudError(not_running_message(info))
    return info


def wait_for(compute: Compute, instance_id: str, state: str = "running", *, timeout: float = 600,
             poll: float = 5.0, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> InstanceInfo:
    """Poll until the instance is in ``state``; ``CloudError`` when it can no longer get
    there (terminated while waiting for running) or after ``timeout`` seconds."""
    deadline = clock() + timeout
    while True:
        info = compute.describe(instance_id, not_found_grace=min(timeout, 30.0))
        if info.state == state:
            return info
        if info.state in GONE and state not in GONE:
            raise CloudError(f"instance {instance_id} is {info.state} (waiting for {state}); "
                             "a spot instance may have been reclaimed or shut down from inside")
        if state == "running" and info.state in ("stopping", "stopped"):
            raise CloudError(f"instance {instance_id} is {info.state} (waiting for running); "
                             f"start it with runctl aws start {instance_id}")
        if clock() >= deadline:
            raise CloudError(f"instance {instance_id} is still {info.state} after {timeout:g} s "
                             f"(waiting for {state})")
        sleep(poll)


def require_runctls(info: InstanceInfo, verb: str) -> InstanceInfo:
    """``info`` when runctl launched it; else ``UsageError``: runctl never touches the rest."""
    if not has_runctl_tags(info.tags):
        raise UsageError(f"instance {info.instance_id} was not launched by runctl (no {TAG_CREATED} tag); "
                         f"runctl does not {verb} instances it did not launch")
    return info


def terminate_one(compute: Compute, instance_id: str) -> InstanceInfo:
    """Terminate one instance runctl launched; the instance after the request."""
    info = require_runctls(compute.describe(instance_id), "terminate")
    if info.state == "terminated":
        return info
    compute.terminate([instance_id])
    return compute.describe(instance_id)


def terminate_tagged(compute: Compute, *, job: str | None = None, dry_run: bool = False) -> list[InstanceInfo]:
    """Terminate every live instance runctl launched (of ``job`` when given); returns them."""
    doomed = [i for i in compute.list_tagged(job=job, states=("pending", "running", "stopping", "stopped"))
              if has_runctl_tags(i.tags)]
    if doomed and not dry_run:
        compute.terminate([i.instance_id for i in doomed])
    return doomed
