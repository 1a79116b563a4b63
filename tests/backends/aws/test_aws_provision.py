"""Launching against moto: what was asked is what the server has, and capacity failover."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from runctl.backends.aws.launch import RUNCTL_TAG_KEYS
from runctl.backends.aws.provision import Provisioner
from runctl.errors import CloudError


def described(client, instance_id: str) -> dict:
    return client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def user_data(client, instance_id: str) -> str:
    value = client.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(value).decode()


def tags(items) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items}


def test_spot_through_a_fleet_reads_back_tags_user_data_and_template(ec2_client, spec, wrappers):
    client = wrappers.TemplateReader(ec2_client)
    info = Provisioner(client, region="us-east-1").create_instance(spec)

    data = described(ec2_client, info.instance_id)
    assert data["InstanceLifecycle"] == "spot" and info.lifecycle == "spot"
    assert data["InstanceType"] == "t3.small" == info.instance_type
    instance_tags = tags(data["Tags"])
    assert set(RUNCTL_TAG_KEYS) <= set(instance_tags)
    assert (instance_tags["runctl:job"], instance_tags["runctl:project"], instance_tags["runctl:user"]) == (
        "job-1", "proj", "tester")
    assert instance_tags["runctl:created"].endswith("Z") and instance_tags == info.tags
    text = user_data(ec2_client, info.instance_id)
    assert text == spec.user_data
    wrappers.assert_no_credentials(text)

    # The template the instance came from (read back before runctl deleted it): IMDSv2, hop 2.
    # moto does not copy a template's MetadataOptions onto fleet instances, so they are read here.
    (template,) = client.templates
    launch_data = template["LaunchTemplateData"]
    assert launch_data["MetadataOptions"]["HttpTokens"] == "required"
    assert launch_data["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    assert launch_data["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert launch_data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert set(RUNCTL_TAG_KEYS) <= set(tags(launch_data["TagSpecifications"][0]["Tags"]))
    assert ec2_client.describe_launch_templates()["LaunchTemplates"] == []  # deleted after the launch

    (fleet,) = ec2_client.describe_fleets()["Fleets"]
    assert fleet["Type"] == "instant"
    assert fleet["SpotOptions"]["AllocationStrategy"] == "price-capacity-optimized"
    assert fleet["SpotOptions"]["InstanceInterruptionBehavior"] == "terminate"
    assert set(RUNCTL_TAG_KEYS) <= set(tags(fleet["Tags"]))


def test_on_demand_through_run_instances_reads_back_imdsv2_and_tags(ec2_client, spec, wrappers):
    info = Provisioner(ec2_client, region="us-east-1").create_instance(dataclasses.replace(spec, spot=False))
    data = described(ec2_client, info.instance_id)
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    assert "InstanceLifecycle" not in data and info.lifecycle == "on-demand"
    assert set(RUNCTL_TAG_KEYS) <= set(tags(data["Tags"]))
    volume_id = data["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    volume = ec2_client.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert set(RUNCTL_TAG_KEYS) <= set(tags(volume.get("Tags", ())))
    wrappers.assert_no_credentials(user_data(ec2_client, info.instance_id))


def test_spot_without_fleet_permission_uses_run_instances_with_spot_options(ec2_client, spec, wrappers):
    client = wrappers.Refuses(ec2_client, {"create_launch_template"})
    info = Provisioner(client, region="us-east-1").create_instance(spec)
    data = described(ec2_client, info.instance_id)
    assert data["InstanceLifecycle"] == "spot"
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    behaviour = ec2_client.describe_instance_attribute(InstanceId=info.instance_id,
                                                      Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    assert set(RUNCTL_TAG_KEYS) <= set(tags(data["Tags"]))
    assert user_data(ec2_client, info.instance_id) == spec.user_data


def test_capacity_error_on_the_first_type_moves_to_the_next_fleet(ec2_client, spec, wrappers):
    client = wrappers.CapacityShortage(ec2_client, {"t3.small"})
    provisioner = Provisioner(client, region="us-east-1")
    info = provisioner.create_instance(dataclasses.replace(spec, subnet_ids=subnets(ec2_client, 2)))
    assert info.instance_type == "t3.micro" and info.lifecycle == "spot"
    asked = [[o["InstanceType"] for o in req["LaunchTemplateConfigs"][0]["Overrides"]] for _, req in client.calls]
    assert asked == [["t3.small", "t3.small"], ["t3.micro", "t3.micro"]]  # each type across both subnets
    assert [(e.instance_type, e.code) for e in provisioner.skipped] == [
        ("t3.small", "InsufficientInstanceCapacity")] * 2


def test_capacity_error_on_demand_tries_every_subnet_then_the_next_type(ec2_client, spec, wrappers):
    client = wrappers.CapacityShortage(ec2_client, {"t3.small"})
    two = subnets(ec2_client, 2)
    info = Provisioner(client, region="us-east-1").create_instance(
        dataclasses.replace(spec, spot=False, subnet_ids=two))
    assert info.instance_type == "t3.micro" and info.subnet_id == two[0]
    assert [(r["InstanceType"], r["SubnetId"]) for _, r in client.calls] == [
        ("t3.small", two[0]), ("t3.small", two[1]), ("t3.micro", two[0])]


def test_no_capacity_anywhere_is_one_clear_error(ec2_client, spec, wrappers):
    client = wrappers.CapacityShortage(ec2_client, {"t3.small", "t3.micro"})
    with pytest.raises(CloudError, match=r"^no spot capacity for t3.small, t3.micro \(t3.small: Insufficient"
                                         r"InstanceCapacity; t3.micro: InsufficientInstanceCapacity\); add "
                                         r"--fallback-types"):
        Provisioner(client, region="us-east-1").create_instance(spec)
    assert ec2_client.describe_launch_templates()["LaunchTemplates"] == []


def test_other_pool_errors_stop_at_once(ec2_client, spec, wrappers):
    client = wrappers.CapacityShortage(ec2_client, {"t3.small"}, code="InvalidParameterValue")
    with pytest.raises(CloudError, match="^cannot launch t3.small: InvalidParameterValue"):
        Provisioner(client, region="us-east-1").create_instance(spec)
    assert len(client.calls) == 1


def test_a_retried_launch_reuses_its_launch_template(ec2_client, spec, wrappers):
    from runctl.backends.aws.launch import launch_template_request

    ec2_client.create_launch_template(**launch_template_request(spec))  # left by an interrupted attempt
    info = Provisioner(ec2_client, region="us-east-1").create_instance(spec)
    assert info.state in ("pending", "running")
    assert ec2_client.describe_launch_templates()["LaunchTemplates"] == []


def subnets(client, n: int) -> tuple[str, ...]:
    found = sorted(client.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])
    return tuple(s["SubnetId"] for s in found[:n])
