"""``FakeCompute``: the compute contract (``runctl.backends.compute.Compute``) in memory, for
testing what runs over it (``runctl.backends.instances``, the job lifecycle, the commands
that launch, wait for and terminate instances) in milliseconds. Moto tests keep proving the
EC2 implementation (``runctl.backends.aws.compute.Ec2Compute``) keeps the same contract:

- ``launch`` takes the spec's types in order; a type in ``no_capacity`` or ``unknown_types``
  is skipped (reason ``capacity`` / ``unknown type``), each subnet of the spec in turn; when
  every pool is skipped, ``NoCapacity``. The instance carries the spec's tags.
- ``describe`` of an id it never had is ``CloudNotFound``; ``script(id, *states)`` makes the
  next describes answer those states in turn (the last one stays), as a booting or a
  reclaimed instance would.
- ``terminate`` ends the instances (``terminated``); ``list_tagged`` lists only instances with
  ``runctl:created``, as EC2's tag filter does. ``add`` puts an instance there by other
  means (``tags={}``: one runctl did not launch).

Every call is recorded in ``calls`` as (operation, argument), in order.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from runctl.backends.aws.launch import TAG_JOB, LaunchSpec, has_runctl_tags
from runctl.backends.compute import CAPACITY, LIVE_STATES, UNKNOWN_TYPE, Launched, Skipped
from runctl.errors import CloudNotFound, NoCapacity
from runctl.models import InstanceInfo


class FakeCompute:
    def __init__(self, region: str = "fake-region", *, no_capacity: Sequence[str] = (),
                 unknown_types: Sequence[str] = ()) -> None:
        self.region = region
        self.no_capacity = set(no_capacity)
        self.unknown_types = set(unknown_types)
        self.instances: dict[str, InstanceInfo] = {}
        self.calls: list[tuple[str, object]] = []
        self._scripts: dict[str, list[str]] = {}
        self._ids = (f"i-{n:017x}" for n in itertools.count(1))
        self._launches = itertools.count(1)

    # -- the contract ------------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> Launched:
        self.calls.append(("launch", spec))
        skipped: list[Skipped] = []
        for instance_type in spec.instance_types:
            for subnet in spec.subnet_ids or (None,):
                if instance_type in self.unknown_types:
                    skipped.append(Skipped(instance_type, UNKNOWN_TYPE, subnet, "InvalidInstanceType",
                                           f"{instance_type} is not offered in {self.region}"))
                elif instance_type in self.no_capacity:
                    skipped.append(Skipped(instance_type, CAPACITY, subnet, "InsufficientInstanceCapacity",
                                           f"no {instance_type} capacity"))
                else:
                    instance = self.add(instance_type, tags=spec.tags, spot=spec.spot, subnet_id=subnet,
                                        image_id=spec.image_id)
                    return Launched(instance, tuple(skipped))
        market = "spot" if spec.spot else "on-demand"
        tried = "; ".join(map(str, skipped))
        hint = "add --fallback-types or subnets in other zones" + (", or use --on-demand" if spec.spot else "")
        raise NoCapacity(f"no {market} capacity for {', '.join(spec.instance_types)} ({tried}); {hint}")

    def describe(self, instance_id: str, *, not_found_grace: float = 0.0) -> InstanceInfo:
        self.calls.append(("describe", instance_id))
        info = self._known(instance_id)
        script = self._scripts.get(instance_id)
        if script:
            state = script.pop(0) if len(script) > 1 else script[0]
            info = self.instances[instance_id] = dataclasses.replace(info, state=state)
        return info

    def terminate(self, instance_ids: Sequence[str]) -> None:
        self.calls.append(("terminate", tuple(instance_ids)))
        for instance_id in instance_ids:
            self._known(instance_id)
        for instance_id in instance_ids:
            self._scripts.pop(instance_id, None)
            self.instances[instance_id] = dataclasses.replace(self.instances[instance_id], state="terminated")

    def list_tagged(self, *, job: str | None = None, states: tuple[str, ...] = LIVE_STATES) -> list[InstanceInfo]:
        self.calls.append(("list_tagged", job))
        found = [i for i in self.instances.values() if has_runctl_tags(i.tags)
                 and (job is None or i.tags.get(TAG_JOB) == job) and (not states or i.state in states)]
        return sorted(found, key=lambda i: (i.launched, i.instance_id))

    # -- the test's side ---------------------------------------------------------------
    def add(self, instance_type: str = "t3.micro", *, tags: dict[str, str] | None = None, state: str = "running",
            spot: bool = False, subnet_id: str | None = None, image_id: str = "ami-fake") -> InstanceInfo:
        """An instance that is there (``tags={}``: one runctl did not launch)."""
        n = next(self._launches)  # launch times one second apart, in order
        launched = f"2026-01-01T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
        instance = InstanceInfo(next(self._ids), instance_type, state, "spot" if spot else "on-demand",
                                az=f"{self.region}a", launched=launched,
                                tags=dict(tags or {}), region=self.region, image_id=image_id, subnet_id=subnet_id)
        self.instances[instance.instance_id] = instance
        return instance

    def script(self, instance_id: str, *states: str) -> None:
        """The next describes of ``instance_id`` answer ``states`` in turn; the last one stays."""
        self._known(instance_id)
        self._scripts[instance_id] = list(states)

    def _known(self, instance_id: str) -> InstanceInfo:
        try:
            return self.instances[instance_id]
        except KeyError:
            raise CloudNotFound(f"instance {instance_id} not found in {self.region}", code="InvalidInstanceID.NotFound",
                                operation="DescribeInstances") from None
