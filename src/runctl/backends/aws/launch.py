"""Pure request builders for launching one instance: RunInstances, a launch template and an
instant CreateFleet. No boto3 here: each function returns the keyword arguments of one call.

Every launch asks for IMDSv2 only (``HttpTokens=required``) with a hop limit of 2 (a
container on the instance can still read the metadata service), tags the instance and its
volumes with the four runctl tags plus ``Name``, and carries a deterministic ``ClientToken``:
the same request with the same ``idempotency_key`` gives the same token, so a retried launch
does not start a second instance. The ``runctl:created`` time and the user data (its wheel
URL is presigned anew on every run) are left out of the token.

Spot launches are one-time requests whose instances terminate on interruption (and on a
shutdown from inside). CreateFleet takes no spot options in its launch template, so they go
in the fleet request (``SpotOptions``, the per-override ``MaxPrice``).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

TAG_JOB = "runctl:job"
TAG_PROJECT = "runctl:project"
TAG_USER = "runctl:user"
TAG_CREATED = "runctl:created"
RUNCTL_TAG_KEYS = (TAG_JOB, TAG_PROJECT, TAG_USER, TAG_CREATED)

ALLOCATION_STRATEGY = "price-capacity-optimized"
TOKEN_PREFIX = "runctl-"
TOKEN_LENGTH = 64  # the most AWS accepts

def utc_now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class LaunchSpec:
    """Everything one launch needs; ``instance_types`` in order of preference."""

    image_id: str
    instance_types: tuple[str, ...]
    spot: bool = True
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    iam_instance_profile: str | None = None  # a name or an ARN
    user_data: str = ""
    spot_max_price: float | None = None  # USD per hour; None: capped at the on-demand price
    job: str = ""
    project: str = ""
    user: str = ""
    created: str = ""  # UTC ISO 8601; not part of the idempotency token
    name: str = ""
    hop_limit: int = 2
    idempotency_key: str = ""  # names the launch intent (e.g. job and attempt)

    def __post_init__(self) -> None:
        if not self.instance_types:
            raise ValueError("LaunchSpec needs at least one instance type")

    @property
    def tags(self) -> dict[str, str]:
        """The tags of the instance, its volumes, the launch template and the fleet."""
        name = self.name or "runctl" + (f"-{self.job}" if self.job else f"-{self.project}" if self.project else "")
        return {"Name": name, TAG_JOB: self.job, TAG_PROJECT: self.project, TAG_USER: self.user,
                TAG_CREATED: self.created or utc_now_iso()}


def has_runctl_tags(tags: dict[str, str]) -> bool:
    """True for a resource runctl launched (it carries ``runctl:created``)."""
    return TAG_CREATED in tags


def tag_specifications(tags: dict[str, str], *resource_types: str) -> list[dict[str, Any]]:
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    return [{"ResourceType": r, "Tags": copy.deepcopy(tag_list)} for r in resource_types]


def metadata_options(hop_limit: int = 2) -> dict[str, Any]:
    return {"HttpTokens": "required", "HttpPutResponseHopLimit": hop_limit, "HttpEndpoint": "enabled"}


def price_text(price: float) -> str:
    return f"{price:.6f}".rstrip("0").rstrip(".")


def spot_market_options(max_price: float | None) -> dict[str, Any]:
    options: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
    if max_price is not None:
        options["MaxPrice"] = price_text(max_price)
    return {"MarketType": "spot", "SpotOptions": options}


def _profile(name_or_arn: str) -> dict[str, str]:
    return {"Arn": name_or_arn} if name_or_arn.startswith("arn:") else {"Name": name_or_arn}


def instance_settings(spec: LaunchSpec) -> dict[str, Any]:
    """What RunInstances and a launch template share."""
    request: dict[str, Any] = {
        "ImageId": spec.image_id,
        "MetadataOptions": metadata_options(spec.hop_limit),
        "TagSpecifications": tag_specifications(spec.tags, "instance", "volume"),
    }
    if spec.spot:
        request["InstanceInitiatedShutdownBehavior"] = "terminate"
    if spec.iam_instance_profile:
        request["IamInstanceProfile"] = _profile(spec.iam_instance_profile)
    if spec.key_name:
        request["KeyName"] = spec.key_name
    return request


def launch_request(spec: LaunchSpec, instance_type: str, subnet_id: str | None = None) -> dict[str, Any]:
    """RunInstances for one instance of ``instance_type`` (in ``subnet_id`` when given)."""
    request = instance_settings(spec)
    request.update({"InstanceType": instance_type, "MinCount": 1, "MaxCount": 1})
    if spec.user_data:
        request["UserData"] = spec.user_data  # boto3 base64-encodes it for RunInstances
    if spec.spot:
        request["InstanceMarketOptions"] = spot_market_options(spec.spot_max_price)
    if subnet_id:
        request["SubnetId"] = subnet_id
    if spec.security_group_ids:
        request["SecurityGroupIds"] = list(spec.security_group_ids)
    request["ClientToken"] = client_token(request, spec.idempotency_key)
    return request


def launch_template_request(spec: LaunchSpec) -> dict[str, Any]:
    """CreateLaunchTemplate for a CreateFleet launch (no market options: the fleet has them).

    The name and token come from the spec, so a retried launch finds its own template."""
    data = instance_settings(spec)
    if spec.user_data:
        data["UserData"] = base64.b64encode(spec.user_data.encode()).decode()  # not encoded by boto3 here
    if spec.security_group_ids:
        data["SecurityGroupIds"] = list(spec.security_group_ids)
    request: dict[str, Any] = {"LaunchTemplateData": data}
    token = client_token({"LaunchTemplateData": data, "InstanceTypes": list(spec.instance_types),
                          "Subnets": list(spec.subnet_ids), "Spot": spec.spot}, spec.idempotency_key)
    request["LaunchTemplateName"] = f"runctl-{token[len(TOKEN_PREFIX):][:32]}"
    request["TagSpecifications"] = tag_specifications(spec.tags, "launch-template")
    request["ClientToken"] = token
    return request


def fleet_request(spec: LaunchSpec, launch_template_id: str, instance_types: tuple[str, ...] | list[str],
                  subnet_ids: tuple[str, ...] | list[str] = (), version: str = "$Latest") -> dict[str, Any]:
    """CreateFleet Type=instant for one instance: every type x subnet is one pool (override).

    Spot pools are chosen price-capacity-optimized; on-demand pools in the order given."""
    overrides = []
    for priority, instance_type in enumerate(instance_types):
        for subnet in subnet_ids or (None,):
            override: dict[str, Any] = {"InstanceType": instance_type}
            if subnet:
                override["SubnetId"] = subnet
            if spec.spot and spec.spot_max_price is not None:
                override["MaxPrice"] = price_text(spec.spot_max_price)
            if not spec.spot:
                override["Priority"] = float(priority)
            overrides.append(override)
    capacity = "spot" if spec.spot else "on-demand"
    request: dict[str, Any] = {
        "Type": "instant",
        "LaunchTemplateConfigs": [{
            "LaunchTemplateSpecification": {"LaunchTemplateId": launch_template_id, "Version": version},
            "Overrides": overrides,
        }],
        "TargetCapacitySpecification": {"TotalTargetCapacity": 1, "DefaultTargetCapacityType": capacity},
        "TagSpecifications": tag_specifications(spec.tags, "fleet"),
    }
    if spec.spot:
        request["SpotOptions"] = {"AllocationStrategy": ALLOCATION_STRATEGY, "InstanceInterruptionBehavior": "terminate"}
    else:
        request["OnDemandOptions"] = {"AllocationStrategy": "prioritized"}
    request["ClientToken"] = client_token(request, spec.idempotency_key)
    return request


def _without_user_data(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_user_data(v) for k, v in value.items() if k != "UserData"}
    if isinstance(value, list):
        return [_without_user_data(v) for v in value]
    return value


def client_token(request: dict[str, Any], idempotency_key: str = "") -> str:
    """A ClientToken (<= 64 ASCII chars) from the request without its token, its creation time
    and its user data (which carries a freshly presigned URL each time it is made)."""
    stripped = _without_user_data({k: v for k, v in request.items() if k != "ClientToken"})
    text = json.dumps(stripped, sort_keys=True, default=str)
    created = re.escape(json.dumps(TAG_CREATED))
    text = re.sub(created + r', "Value": "[^"]*"', json.dumps(TAG_CREATED) + ', "Value": ""', text)
    digest = hashlib.sha256(f"{idempotency_key}\0{text}".encode()).hexdigest()
    return (TOKEN_PREFIX + digest)[:TOKEN_LENGTH]
