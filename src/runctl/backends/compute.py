"""The compute contract: what runctl asks of wherever its instances run.

Four calls, as dstack's ``Compute`` and SkyPilot's provisioner functions: ``launch`` one
instance for a ``LaunchSpec`` (what was launched, and every pool skipped on the way),
``describe`` one, ``terminate`` some, ``list_tagged`` the ones runctl launched. The EC2
implementation is ``runctl.backends.aws.compute.Ec2Compute``; ``runctl.testing.FakeCompute``
keeps the same contract in memory, so the lifecycle built on it (``runctl.backends.instances``:
waiting, requiring a running instance, terminating only runctl's) is tested in milliseconds
while moto tests keep proving the EC2 side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from runctl.models import InstanceInfo

if TYPE_CHECKING:
    from runctl.backends.aws.launch import LaunchSpec

#: Instance states in which a machine exists (``list_tagged``'s default).
LIVE_STATES = ("pending", "running", "stopping", "stopped")
#: States an instance never leaves.
GONE = ("shutting-down", "terminated")

#: Why a pool gave no instance, as ``Skipped.reason``.
CAPACITY = "capacity"  # no capacity of that type there now: the next one is tried
UNKNOWN_TYPE = "unknown type"  # the region does not offer the type
PRICE = "price"  # dearer than the price limit


@dataclass(frozen=True)
class Skipped:
    """One pool (an instance type, in one subnet when known) that gave no instance."""

    instance_type: str
    reason: str
    subnet_id: str | None = None
    code: str = ""  # the cloud's own error code, when it gave one
    message: str = ""

    def __str__(self) -> str:
        where = f" in {self.subnet_id}" if self.subnet_id else ""
        return f"{self.instance_type}{where}: {self.code or self.reason}"


@dataclass(frozen=True)
class Launched:
    """What ``launch`` made, and the pools it tried first and skipped, in order."""

    instance: InstanceInfo
    skipped: tuple[Skipped, ...] = ()


@runtime_checkable
class Compute(Protocol):
    """Instances in one region. Errors leave as ``CloudError`` subclasses (``NoCapacity``
    when no pool of a launch had capacity, ``CloudNotFound`` for an unknown instance)."""

    region: str

    def launch(self, spec: LaunchSpec) -> Launched:
        """One instance of the first of ``spec.instance_types`` (and subnet) that has capacity."""
        ...

    def describe(self, instance_id: str, *, not_found_grace: float = 0.0) -> InstanceInfo:
        """The instance now. ``not_found_grace``: seconds to keep asking while a just-launched
        instance is not listed yet (an eventually consistent API)."""
        ...

    def terminate(self, instance_ids: Sequence[str]) -> None:
        """Terminate these instances (and whatever would launch them again). The caller has
        checked they are runctl's (``runctl.backends.instances``)."""
        ...

    def list_tagged(self, *, job: str | None = None, states: tuple[str, ...] = LIVE_STATES) -> list[InstanceInfo]:
        """Instances runctl launched (tag ``runctl:created``), of ``job`` when given, in one of
        ``states`` (all states when empty), oldest first."""
        ...
