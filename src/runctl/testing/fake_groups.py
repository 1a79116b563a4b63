"""``FakeGroups``: a job's Auto Scaling groups in memory, for testing the job lifecycle
(``runctl.agent.group_member``, ``runctl.jobs``) in milliseconds. It keeps the contract of
``runctl.backends.aws.job_group.JobGroups`` that the lifecycle relies on (moto tests keep
proving the real one): detaching without lowering the capacity launches a replacement at
once; leaving lowers it; ending a group terminates its members and is idempotent.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field


@dataclass
class FakeGroup:
    name: str
    members: list[str]
    desired: int = 1
    ended: bool = False
    launched: list[str] = field(default_factory=list)  # every instance the group launched


class FakeGroups:
    def __init__(self) -> None:
        self.groups: dict[str, FakeGroup] = {}
        self.terminated: list[str] = []
        self.calls: list[tuple] = []  # (operation, group name, instance or None), in order
        self._ids = (f"i-fake{n:012x}" for n in itertools.count(1))

    def __call__(self, region: str) -> FakeGroups:
        """As ``lambda region: JobGroups.for_session(...)``: the same fake for every region."""
        return self

    def create(self, spec, name: str, subnet_ids: tuple[str, ...], *, size: int = 1,
               on_template=lambda record: None):
        """As ``JobGroups.create``: ``on_template`` runs before the group's first launch."""
        from runctl.backends.aws.job_group import GroupRecord

        self.calls.append(("create", name, None))
        record = GroupRecord(name, f"lt-{name}", "fake-region", tuple(spec.instance_types),
                             tuple(subnet_ids) or ("subnet-fake",), spec.spot, size)
        on_template(record)
        self.add(name, size)
        return record

    def describe(self, name: str):
        from runctl.backends.aws.job_group import GroupState

        group = self.groups.get(name)
        if group is None or group.ended:
            return None
        return GroupState(name, group.desired, tuple({"InstanceId": i, "LifecycleState": "InService",
                                                      "AvailabilityZone": "fake-az", "InstanceType": "fake"}
                                                     for i in group.members))

    def add(self, name: str, size: int = 1) -> FakeGroup:
        group = FakeGroup(name, [], desired=size)
        self.groups[name] = group
        self._fill(group)
        return group

    def _fill(self, group: FakeGroup) -> None:
        while len(group.members) < group.desired:
            instance_id = next(self._ids)
            group.members.append(instance_id)
            group.launched.append(instance_id)

    def detach(self, name: str, instance_id: str) -> bool:
        self.calls.append(("detach", name, instance_id))
        group = self.groups.get(name)
        if group is None or group.ended or instance_id not in group.members:
            return False
        group.members.remove(instance_id)
        self._fill(group)  # the capacity is kept: a replacement, at once
        return True

    def end(self, record, *, leaving: str | None = None) -> None:
        self.calls.append(("end", record.name, leaving))
        group = self.groups.get(record.name)
        if group is None or group.ended:
            return
        if leaving in group.members:
            group.members.remove(leaving)
        self.terminated += group.members
        group.members, group.desired, group.ended = [], 0, True

    def lose(self, name: str, instance_id: str) -> None:
        """The instance is gone without a notice: the group replaces it."""
        group = self.groups[name]
        group.members.remove(instance_id)
        self.terminated.append(instance_id)
        self._fill(group)
