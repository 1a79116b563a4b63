"""The Auto Scaling adapter for a job's group: create it, detach an instance, end it, look.

``JobGroups(autoscaling, ec2, region=...)`` takes boto3 clients (a test may pass Stubber'd
ones). Every botocore error leaves as a one-line ``CloudError`` (``session.translate``).
Ending a group is idempotent (a group or template already gone is the wanted state), so the
agent that sees the job end, ``runctl aws cancel`` and ``resources cleanup`` may all try.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from runctl.backends.aws.autoscaling import (GROUP_TAG, create_group_request, delete_group_request, detach_request,
                                             launch_template_request)
from runctl.backends.aws.launch import TAG_CREATED, LaunchSpec
from runctl.backends.aws.session import error_code, translate
from runctl.errors import CloudError

log = logging.getLogger(__name__)

_GONE_CODES = {"InvalidLaunchTemplateName.NotFoundException", "InvalidLaunchTemplateId.NotFound",
               "InvalidLaunchTemplateId.Malformed"}


@dataclass(frozen=True)
class GroupRecord:
    """What the store keeps of a job's group (``jobs/<id>/group.json``)."""

    name: str
    launch_template_id: str
    region: str
    instance_types: tuple[str, ...]
    subnet_ids: tuple[str, ...]
    spot: bool
    size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "instance_types": list(self.instance_types), "subnet_ids": list(self.subnet_ids)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupRecord:
        return cls(name=str(data["name"]), launch_template_id=str(data["launch_template_id"]),
                   region=str(data.get("region") or ""), instance_types=tuple(data.get("instance_types") or ()),
                   subnet_ids=tuple(data.get("subnet_ids") or ()), spot=bool(data.get("spot", True)),
                   size=int(data.get("size") or 1))


@dataclass(frozen=True)
class GroupState:
    name: str
    desired: int
    instances: tuple[dict[str, str], ...]  # InstanceId, LifecycleState, AvailabilityZone, InstanceType


def _template_gone(exc: CloudError) -> bool:
    return error_code(exc.__cause__) in _GONE_CODES


class JobGroups:
    def __init__(self, autoscaling, ec2, *, region: str = "") -> None:
        self.autoscaling = autoscaling
        self.ec2 = ec2
        self.region = region

    @classmethod
    def for_session(cls, session) -> JobGroups:
        """From a ``session.AwsSession``."""
        return cls(session.client("autoscaling"), session.client("ec2"), region=session.region)

    # -- creating ----------------------------------------------------------------------
    def default_subnets(self) -> tuple[str, ...]:
        """The default VPC's subnets (one per AZ), for an account that configured none."""
        with translate("find the default VPC's subnets", region=self.region, permission="ec2:DescribeSubnets"):
            found = self.ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
        return tuple(s["SubnetId"] for s in sorted(found, key=lambda s: s.get("AvailabilityZone", "")))

    def create(self, spec: LaunchSpec, name: str, subnet_ids: tuple[str, ...], *, size: int = 1,
               on_template: Callable[[GroupRecord], None] = lambda record: None) -> GroupRecord:
        """The job's launch template and group; the template is removed again when the group
        cannot be made (nothing is left half-made). ``on_template`` runs between the two, with
        the record the group will have."""
        from runctl.errors import UsageError

        subnets = subnet_ids or self.default_subnets()
        if not subnets:
            raise UsageError(f"no subnet to run the job's group in ({self.region} has no default VPC): set "
                             "[aws] subnet_ids in .runctl.toml")
        with translate("create the job's launch template", region=self.region,
                       permission="ec2:CreateLaunchTemplate"):
            template = self.ec2.create_launch_template(**launch_template_request(spec, name))["LaunchTemplate"]
        template_id = template["LaunchTemplateId"]
        record = GroupRecord(name, template_id, self.region, spec.instance_types, tuple(subnets), spec.spot, size)
        try:
            on_template(record)
            with translate("create the job's Auto Scaling group", region=self.region,
                           permission="autoscaling:CreateAutoScalingGroup"):
                self.autoscaling.create_auto_scaling_group(
                    **create_group_request(spec, name, template_id, subnets, size=size))
        except BaseException:
            self._delete_template(template_id)
            raise
        return record

    # -- changing ----------------------------------------------------------------------
    def detach(self, name: str, instance_id: str) -> bool:
        """Take ``instance_id`` out of the group without lowering its desired capacity: the
        group launches a replacement now. False when it is no member (any more)."""
        try:
            with translate(f"detach {instance_id} from its group", region=self.region,
                           permission="autoscaling:DetachInstances"):
                self.autoscaling.detach_instances(**detach_request(name, instance_id))
        except CloudError:
            # Auto Scaling says ValidationError for a missing group and a non-member alike,
            # with no finer code: look instead of parsing its message.
            state = self.describe(name)
            if state is None or instance_id not in {i["InstanceId"] for i in state.instances}:
                log.info("%s is no member of %s (any more)", instance_id, name)
                return False
            raise
        return True

    def end(self, record: GroupRecord, *, leaving: str | None = None) -> None:
        """Delete the group (its instances terminate) and its launch template. Idempotent.
        ``leaving``: the calling instance, which first leaves the group with its capacity, so
        that the deletion does not terminate it before it has recorded the end."""
        if leaving is not None:
            self._leave(record.name, leaving)
        try:
            with translate("delete the job's Auto Scaling group", region=self.region,
                           permission="autoscaling:DeleteAutoScalingGroup"):
                self.autoscaling.delete_auto_scaling_group(**delete_group_request(record.name))
        except CloudError:
            if self.describe(record.name) is not None:  # ValidationError for a missing group too
                raise
        self._delete_template(record.launch_template_id)

    def _leave(self, name: str, instance_id: str) -> None:
        """Take ``instance_id`` out of the group and lower its capacity (to a minimum of 0
        first: Auto Scaling refuses to go below the minimum), so that nothing replaces it."""
        if self.describe(name) is None:
            return
        with translate("let this instance leave its group", region=self.region,
                       permission="autoscaling:UpdateAutoScalingGroup and autoscaling:DetachInstances"):
            self.autoscaling.update_auto_scaling_group(AutoScalingGroupName=name, MinSize=0)
            self.autoscaling.detach_instances(**detach_request(name, instance_id, keep_capacity=False))

    def _delete_template(self, template_id: str) -> None:
        try:
            with translate("delete the job's launch template", region=self.region,
                           permission="ec2:DeleteLaunchTemplate"):
                self.ec2.delete_launch_template(LaunchTemplateId=template_id)
        except CloudError as exc:
            if not _template_gone(exc):
                raise

    # -- looking -----------------------------------------------------------------------
    def describe(self, name: str) -> GroupState | None:
        """The group now, or None when it does not exist (ended)."""
        with translate("describe the job's Auto Scaling group", region=self.region,
                       permission="autoscaling:DescribeAutoScalingGroups"):
            found = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        if not found:
            return None
        group = found[0]
        instances = tuple({k: str(i.get(k, "")) for k in ("InstanceId", "LifecycleState", "AvailabilityZone",
                                                           "InstanceType")} for i in group.get("Instances", ()))
        return GroupState(name, int(group.get("DesiredCapacity") or 0), instances)

    def list_tagged(self) -> list[dict[str, Any]]:
        """Every group runctl made (tag ``runctl:created``): name, tags, launch template id."""
        found = []
        with translate("list runctl's Auto Scaling groups", region=self.region,
                       permission="autoscaling:DescribeAutoScalingGroups"):
            for page in self.autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
                    Filters=[{"Name": "tag-key", "Values": [TAG_CREATED]}]):
                for group in page.get("AutoScalingGroups", ()):
                    tags = {t["Key"]: t.get("Value", "") for t in group.get("Tags", ())}
                    if TAG_CREATED not in tags:
                        continue
                    template = (group.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {})
                                .get("LaunchTemplateSpecification", {}) or group.get("LaunchTemplate") or {})
                    found.append({"name": group["AutoScalingGroupName"], "tags": tags,
                                  "launch_template_id": template.get("LaunchTemplateId", ""),
                                  "instances": [i["InstanceId"] for i in group.get("Instances", ())]})
        return found


def group_of_instance(tags: dict[str, str]) -> str | None:
    """The group an instance belongs to, from its tags (AWS's own)."""
    return tags.get(GROUP_TAG) or None
