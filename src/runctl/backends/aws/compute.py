"""The compute contract on EC2 (``runctl.backends.compute.Compute``): launching is
``provision.Provisioner`` (instant fleets, falling back across types and subnets),
describing, listing and terminating are ``ec2.Ec2``. This class only joins them.

``Ec2Compute(client)`` takes a boto3 EC2 client as given (a test may wrap it), plus the
sleep and clock that describing waits with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from runctl.backends.aws.ec2 import Ec2
from runctl.backends.aws.launch import LaunchSpec
from runctl.backends.aws.provision import Provisioner
from runctl.backends.compute import LIVE_STATES, Launched
from runctl.models import InstanceInfo


class Ec2Compute:
    def __init__(self, client, *, region: str = "", sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.region = region
        self._provisioner = Provisioner(client, region=region, sleep=sleep, clock=clock)
        self.ec2: Ec2 = self._provisioner.ec2  # stop, start and the launch facts: EC2's own, not the contract's

    def launch(self, spec: LaunchSpec) -> Launched:
        instance = self._provisioner.create_instance(spec)
        return Launched(instance, tuple(self._provisioner.skipped))

    def describe(self, instance_id: str, *, not_found_grace: float = 0.0) -> InstanceInfo:
        return self.ec2.describe(instance_id, not_found_grace=not_found_grace)

    def terminate(self, instance_ids: Sequence[str]) -> None:
        self.ec2.terminate_ids(list(instance_ids))

    def list_tagged(self, *, job: str | None = None, states: tuple[str, ...] = LIVE_STATES) -> list[InstanceInfo]:
        return self.ec2.list_tagged(job=job, states=states)
