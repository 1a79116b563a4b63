"""Pure request builders for a job's Auto Scaling group: its launch template and the group.

A job on AWS runs in a group of its own, so that AWS, not a runctl process on someone's
laptop, keeps it alive: the group replaces a lost instance, and an instance that received a
spot notice detaches itself without lowering the desired capacity, so the replacement is
launched while the dying one makes its final snapshot durable. No boto3 here: each function
returns the keyword arguments of one call.

The launch template requires IMDSv2 (hop limit 2), carries the bootstrap user data and the
instance profile, tags instances and volumes with the runctl tags, and makes a shutdown from
inside terminate the instance (the boot watchdog and the agent's end of a job rely on it).
The group spreads over every configured subnet, takes the instance type and its fallbacks as
overrides of a mixed-instances policy (spot: price-capacity-optimized; on-demand: in the
order given), and has Capacity Rebalancing on.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from runctl.backends.aws.launch import (ALLOCATION_STRATEGY, TAG_JOB, LaunchSpec, instance_settings, price_text,
                                        tag_specifications)

GROUP_PREFIX = "runctl-"
#: The tag AWS puts on every instance of a group.
GROUP_TAG = "aws:autoscaling:groupName"
#: Seconds the group waits after a launch before it judges the instance's health: the
#: bootstrap installs Python and runctl first (the boot watchdog bounds the rest).
HEALTH_CHECK_GRACE_S = 300
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def group_name(job_id: str) -> str:
    """The job's group and launch template name: ``runctl-<job>``, cut to what AWS takes
    (launch templates: 128 characters) with a hash suffix so two long job ids stay apart."""
    name = GROUP_PREFIX + _NAME_UNSAFE.sub("-", job_id)
    if len(name) <= 120:
        return name
    return name[:111] + "-" + hashlib.sha256(job_id.encode()).hexdigest()[:8]


def launch_template_request(spec: LaunchSpec, name: str) -> dict[str, Any]:
    """CreateLaunchTemplate for the job's group. No market options: the group's
    mixed-instances policy chooses spot or on-demand (AWS refuses both at once). The first
    instance type is the template's, which the overrides replace."""
    data = instance_settings(spec)
    data["InstanceType"] = spec.instance_types[0]
    data["InstanceInitiatedShutdownBehavior"] = "terminate"
    if spec.user_data:
        data["UserData"] = base64.b64encode(spec.user_data.encode()).decode()
    if spec.security_group_ids:
        data["SecurityGroupIds"] = list(spec.security_group_ids)
    return {"LaunchTemplateName": name, "LaunchTemplateData": data,
            "TagSpecifications": tag_specifications(spec.tags, "launch-template")}


def instances_distribution(spot: bool, max_price: float | None = None) -> dict[str, Any]:
    if not spot:
        return {"OnDemandBaseCapacity": 0, "OnDemandPercentageAboveBaseCapacity": 100,
                "OnDemandAllocationStrategy": "prioritized"}
    distribution: dict[str, Any] = {"OnDemandBaseCapacity": 0, "OnDemandPercentageAboveBaseCapacity": 0,
                                    "SpotAllocationStrategy": ALLOCATION_STRATEGY}
    if max_price is not None:
        distribution["SpotMaxPrice"] = price_text(max_price)
    return distribution


def create_group_request(spec: LaunchSpec, name: str, launch_template_id: str, subnet_ids: list[str] | tuple[str, ...],
                         *, size: int = 1) -> dict[str, Any]:
    """CreateAutoScalingGroup for ``size`` instances of the job (min = max = desired)."""
    if not subnet_ids:
        raise ValueError("a job's group needs at least one subnet")
    tags = [{"Key": key, "Value": value, "PropagateAtLaunch": False, "ResourceId": name,
             "ResourceType": "auto-scaling-group"} for key, value in spec.tags.items()]
    return {
        "AutoScalingGroupName": name,
        "MinSize": size,
        "MaxSize": size,
        "DesiredCapacity": size,
        "VPCZoneIdentifier": ",".join(subnet_ids),
        "MixedInstancesPolicy": {
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateId": launch_template_id, "Version": "$Latest"},
                "Overrides": [{"InstanceType": t} for t in spec.instance_types],
            },
            "InstancesDistribution": instances_distribution(spec.spot, spec.spot_max_price),
        },
        "CapacityRebalance": True,
        "HealthCheckType": "EC2",
        "HealthCheckGracePeriod": HEALTH_CHECK_GRACE_S,
        "Tags": tags,
    }


def detach_request(name: str, instance_id: str, *, keep_capacity: bool = True) -> dict[str, Any]:
    """DetachInstances; keeping the desired capacity makes the group launch a replacement."""
    return {"AutoScalingGroupName": name, "InstanceIds": [instance_id],
            "ShouldDecrementDesiredCapacity": not keep_capacity}


def delete_group_request(name: str) -> dict[str, Any]:
    """DeleteAutoScalingGroup that terminates the group's instances too."""
    return {"AutoScalingGroupName": name, "ForceDelete": True}


def job_of(tags: list[dict[str, Any]] | dict[str, str]) -> str | None:
    """The runctl job a group or instance belongs to, from its tags."""
    found = tags if isinstance(tags, dict) else {t["Key"]: t.get("Value", "") for t in tags}
    return found.get(TAG_JOB) or None
