"""Pure request builders: RunInstances, the launch template, CreateFleet, the client token."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from runctl.backends.aws import instance_types
from runctl.backends.aws.launch import (
    RUNCTL_TAG_KEYS,
    LaunchSpec,
    client_token,
    fleet_request,
    launch_request,
    launch_template_request,
)
from runctl.errors import UsageError

SPEC = LaunchSpec(image_id="ami-0123", instance_types=("g5.xlarge", "g4dn.xlarge"), spot=True,
                  subnet_ids=("subnet-a", "subnet-b"), iam_instance_profile="runctl-instance",
                  user_data="#!/bin/bash\necho hi\n", spot_max_price=0.5, job="train-1", project="proj",
                  user="alice", created="2026-11-29T07:00:00Z", idempotency_key="k1")


def tags_of(spec: dict, resource: str) -> dict[str, str]:
    (found,) = [t for t in spec["TagSpecifications"] if t["ResourceType"] == resource]
    return {t["Key"]: t["Value"] for t in found["Tags"]}


def test_run_instances_request_has_imdsv2_tags_spot_and_token():
    request = launch_request(SPEC, "g5.xlarge", "subnet-a")
    assert request["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 2,
                                          "HttpEndpoint": "enabled"}
    for resource in ("instance", "volume"):
        tags = tags_of(request, resource)
        assert set(RUNCTL_TAG_KEYS) <= set(tags)
        assert tags["runctl:job"] == "train-1" and tags["runctl:project"] == "proj"
        assert tags["runctl:user"] == "alice" and tags["Name"] == "runctl-train-1"
    assert request["InstanceMarketOptions"] == {"MarketType": "spot", "SpotOptions": {
        "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate", "MaxPrice": "0.5"}}
    assert request["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert request["IamInstanceProfile"] == {"Name": "runctl-instance"}
    assert request["UserData"] == SPEC.user_data  # boto3 encodes it
    assert (request["InstanceType"], request["SubnetId"], request["MinCount"], request["MaxCount"]) == (
        "g5.xlarge", "subnet-a", 1, 1)
    token = request["ClientToken"]
    assert len(token) <= 64 and token.isascii()


def test_on_demand_request_has_no_market_options_and_an_arn_profile():
    spec = dataclasses.replace(SPEC, spot=False, iam_instance_profile="arn:aws:iam::1:instance-profile/x", job="")
    request = launch_request(spec, "t3.micro")
    assert "InstanceMarketOptions" not in request and "InstanceInitiatedShutdownBehavior" not in request
    assert "SubnetId" not in request
    assert request["IamInstanceProfile"] == {"Arn": "arn:aws:iam::1:instance-profile/x"}
    assert tags_of(request, "instance")["runctl:job"] == ""  # present, empty: the instance has no job
    assert tags_of(request, "instance")["Name"] == "runctl-proj"


def test_same_request_same_token_whatever_the_creation_time():
    later = dataclasses.replace(SPEC, created="2026-11-30T09:30:00Z")
    assert launch_request(SPEC, "g5.xlarge")["ClientToken"] == launch_request(later, "g5.xlarge")["ClientToken"]
    assert fleet_request(SPEC, "lt-1", ["g5.xlarge"])["ClientToken"] == \
        fleet_request(later, "lt-1", ["g5.xlarge"])["ClientToken"]
    assert launch_template_request(SPEC)["ClientToken"] == launch_template_request(later)["ClientToken"]
    assert launch_template_request(SPEC)["LaunchTemplateName"] == launch_template_request(later)["LaunchTemplateName"]
    # ...and a different launch gets another token.
    others = [dataclasses.replace(SPEC, idempotency_key="k2"), dataclasses.replace(SPEC, spot=False),
              dataclasses.replace(SPEC, job="train-2")]
    tokens = {launch_request(s, "g5.xlarge")["ClientToken"] for s in [SPEC, *others]}
    assert len(tokens) == 4
    # The user data is left out: a rerun presigns its wheel URL anew.
    fresh_url = dataclasses.replace(SPEC, user_data="#!/bin/bash\ncurl 'https://b.s3/w.whl?X-Amz-Date=2'\n")
    assert launch_request(fresh_url, "g5.xlarge")["ClientToken"] == launch_request(SPEC, "g5.xlarge")["ClientToken"]
    assert launch_template_request(fresh_url)["LaunchTemplateName"] == launch_template_request(SPEC)["LaunchTemplateName"]
    assert launch_request(SPEC, "g4dn.xlarge")["ClientToken"] != launch_request(SPEC, "g5.xlarge")["ClientToken"]
    assert client_token({"a": 1, "ClientToken": "x"}) == client_token({"a": 1})


def test_launch_template_carries_imds_tags_and_encoded_user_data_but_no_market_options():
    request = launch_template_request(SPEC)
    data = request["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert base64.b64decode(data["UserData"]).decode() == SPEC.user_data
    assert "InstanceMarketOptions" not in data  # CreateFleet refuses them in the template
    assert set(RUNCTL_TAG_KEYS) <= set(tags_of(data, "instance"))
    assert set(RUNCTL_TAG_KEYS) <= set(tags_of(request, "launch-template"))
    assert request["LaunchTemplateName"].startswith("runctl-") and len(request["LaunchTemplateName"]) <= 128


def test_fleet_request_is_instant_one_instance_every_type_and_subnet():
    request = fleet_request(SPEC, "lt-1", SPEC.instance_types, SPEC.subnet_ids, "3")
    assert request["Type"] == "instant"
    assert request["TargetCapacitySpecification"] == {"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "spot"}
    assert request["SpotOptions"] == {"AllocationStrategy": "price-capacity-optimized",
                                      "InstanceInterruptionBehavior": "terminate"}
    (config,) = request["LaunchTemplateConfigs"]
    assert config["LaunchTemplateSpecification"] == {"LaunchTemplateId": "lt-1", "Version": "3"}
    assert [(o["InstanceType"], o["SubnetId"], o["MaxPrice"]) for o in config["Overrides"]] == [
        ("g5.xlarge", "subnet-a", "0.5"), ("g5.xlarge", "subnet-b", "0.5"),
        ("g4dn.xlarge", "subnet-a", "0.5"), ("g4dn.xlarge", "subnet-b", "0.5")]
    assert set(RUNCTL_TAG_KEYS) <= set(tags_of(request, "fleet"))
    on_demand = fleet_request(dataclasses.replace(SPEC, spot=False), "lt-1", ["t3.micro", "t3.small"])
    assert on_demand["TargetCapacitySpecification"]["DefaultTargetCapacityType"] == "on-demand"
    assert "SpotOptions" not in on_demand
    assert [o["Priority"] for o in on_demand["LaunchTemplateConfigs"][0]["Overrides"]] == [0.0, 1.0]


@pytest.mark.parametrize("name, hint", [
    ("t3.mega", "did you mean 't3.medium'?"), ("T3.micro", "did you mean 't3.micro'?"),
    ("t3", "family.size"), ("g5 .xlarge", "family.size"),
])
def test_instance_type_shapes(name, hint):
    with pytest.raises(UsageError, match=f"unknown instance type '{name}'") as info:
        instance_types.check_shape(name)
    assert hint in str(info.value)


def test_valid_types_and_ami_parameters():
    for name in ("t3.micro", "g5.48xlarge", "u-6tb1.metal", "m7i-flex.large", "c7gn.metal-48xl"):
        assert instance_types.check_shape(name) == name
    assert instance_types.parse_types(" g5.xlarge, g4dn.xlarge ,") == ("g5.xlarge", "g4dn.xlarge")
    assert instance_types.ami_parameters("t3.micro") == [
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"]
    assert instance_types.ami_parameters("t4g.small")[-1].endswith("arm64")
    gpu = instance_types.ami_parameters("g5.xlarge")
    assert gpu[0] == ("/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/"
                      "latest/ami-id") and gpu[-1].endswith("x86_64")
    assert "/arm64/" in instance_types.ami_parameters("g5g.xlarge")[0]
    assert instance_types.ami_parameters("g4ad.xlarge") == [  # AMD GPUs: the NVIDIA AMI is no use
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"]
    assert [t for t in ("p5.48xlarge", "gr6.4xlarge", "G6E.xlarge", "inf2.xlarge", "trn1.2xlarge", "g4ad.xlarge")
            if instance_types.has_nvidia_gpu(t)] == ["p5.48xlarge", "gr6.4xlarge", "G6E.xlarge"]
    assert instance_types.suggest("t9.large") == "; did you mean 't3.large'?"
