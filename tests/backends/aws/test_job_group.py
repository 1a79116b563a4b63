"""A job's Auto Scaling group: the call shapes AWS documents (botocore's Stubber: moto does
not copy MetadataOptions to instances, ignores CapacityRebalance and the allocation
strategy), what moto can show (a replacement on detach, the end), and the instance role's
policy evaluated against a runctl group and a foreign one."""

from __future__ import annotations

import base64

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from runctl.backends.aws import iam
from runctl.backends.aws.autoscaling import group_name
from runctl.backends.aws.job_group import GroupRecord, JobGroups
from runctl.backends.aws.launch import LaunchSpec

SPEC = LaunchSpec(image_id="ami-1", instance_types=("g5.xlarge", "g6.xlarge"), spot=True, subnet_ids=(),
                  iam_instance_profile="runctl-instance", user_data="#!/bin/bash\necho runctl\n", job="j1",
                  project="p", user="u", created="2026-12-06T00:00:00Z", spot_max_price=1.5)


def clients():
    session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    return session.client("autoscaling"), session.client("ec2")


def test_create_asks_for_imdsv2_tags_spot_over_every_type_and_subnet_and_capacity_rebalancing():
    autoscaling, ec2 = clients()
    with Stubber(ec2) as ec2_stub, Stubber(autoscaling) as asg_stub:
        ec2_stub.add_response("create_launch_template", {"LaunchTemplate": {"LaunchTemplateId": "lt-1"}}, {
            "LaunchTemplateName": "runctl-j1",
            "LaunchTemplateData": {
                "ImageId": "ami-1", "InstanceType": "g5.xlarge",
                "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2, "HttpEndpoint": "enabled"},
                "TagSpecifications": ANY, "InstanceInitiatedShutdownBehavior": "terminate",
                "IamInstanceProfile": {"Name": "runctl-instance"},
                "UserData": base64.b64encode(b"#!/bin/bash\necho runctl\n").decode()},
            "TagSpecifications": ANY})
        asg_stub.add_response("create_auto_scaling_group", {}, {
            "AutoScalingGroupName": "runctl-j1", "MinSize": 1, "MaxSize": 1, "DesiredCapacity": 1,
            "VPCZoneIdentifier": "subnet-a,subnet-b",
            "MixedInstancesPolicy": {
                "LaunchTemplate": {"LaunchTemplateSpecification": {"LaunchTemplateId": "lt-1", "Version": "$Latest"},
                                   "Overrides": [{"InstanceType": "g5.xlarge"}, {"InstanceType": "g6.xlarge"}]},
                "InstancesDistribution": {"OnDemandBaseCapacity": 0, "OnDemandPercentageAboveBaseCapacity": 0,
                                          "SpotAllocationStrategy": "price-capacity-optimized",
                                          "SpotMaxPrice": "1.5"}},
            "CapacityRebalance": True, "HealthCheckType": "EC2", "HealthCheckGracePeriod": 300, "Tags": ANY})
        record = JobGroups(autoscaling, ec2, region="us-east-1").create(SPEC, "runctl-j1", ("subnet-a", "subnet-b"))
    assert record == GroupRecord("runctl-j1", "lt-1", "us-east-1", ("g5.xlarge", "g6.xlarge"),
                                 ("subnet-a", "subnet-b"), True)


def test_the_template_tags_instances_and_volumes_and_the_group_carries_the_runctl_tags():
    from runctl.backends.aws.autoscaling import create_group_request, launch_template_request

    data = launch_template_request(SPEC, "runctl-j1")["LaunchTemplateData"]
    assert {t["ResourceType"] for t in data["TagSpecifications"]} == {"instance", "volume"}
    for spec in data["TagSpecifications"]:
        assert {t["Key"] for t in spec["Tags"]} >= {"runctl:job", "runctl:created"}
    group = create_group_request(SPEC, "runctl-j1", "lt-1", ("subnet-a",))
    assert {t["Key"]: t["Value"] for t in group["Tags"]}["runctl:job"] == "j1"
    on_demand = create_group_request(LaunchSpec(image_id="a", instance_types=("t3.micro",), spot=False), "g", "lt",
                                     ("s",))
    assert on_demand["MixedInstancesPolicy"]["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 100


def test_a_group_that_cannot_be_created_leaves_no_template():
    autoscaling, ec2 = clients()
    with Stubber(ec2) as ec2_stub, Stubber(autoscaling) as asg_stub:
        ec2_stub.add_response("create_launch_template", {"LaunchTemplate": {"LaunchTemplateId": "lt-1"}})
        asg_stub.add_client_error("create_auto_scaling_group", "AccessDenied", "not allowed", 403)
        ec2_stub.add_response("delete_launch_template", {}, {"LaunchTemplateId": "lt-1"})
        with pytest.raises(Exception, match="access denied"):
            JobGroups(autoscaling, ec2, region="us-east-1").create(SPEC, "runctl-j1", ("subnet-a",))
        ec2_stub.assert_no_pending_responses()


def test_leaving_lowers_the_group_to_zero_before_deleting_it():
    autoscaling, ec2 = clients()
    record = GroupRecord("runctl-j1", "lt-1", "us-east-1", ("g5.xlarge",), ("subnet-a",), True)
    with Stubber(ec2) as ec2_stub, Stubber(autoscaling) as asg_stub:
        asg_stub.add_response("describe_auto_scaling_groups", {"AutoScalingGroups": [{
            "AutoScalingGroupName": "runctl-j1", "MinSize": 1, "MaxSize": 1, "DesiredCapacity": 1,
            "DefaultCooldown": 300, "AvailabilityZones": ["us-east-1a"], "HealthCheckType": "EC2",
            "CreatedTime": "2026-12-06T00:00:00Z"}]}, {"AutoScalingGroupNames": ["runctl-j1"]})
        asg_stub.add_response("update_auto_scaling_group", {}, {"AutoScalingGroupName": "runctl-j1", "MinSize": 0})
        asg_stub.add_response("detach_instances", {}, {"AutoScalingGroupName": "runctl-j1", "InstanceIds": ["i-1"],
                                                       "ShouldDecrementDesiredCapacity": True})
        asg_stub.add_response("delete_auto_scaling_group", {}, {"AutoScalingGroupName": "runctl-j1",
                                                                "ForceDelete": True})
        ec2_stub.add_response("delete_launch_template", {}, {"LaunchTemplateId": "lt-1"})
        JobGroups(autoscaling, ec2, region="us-east-1").end(record, leaving="i-1")
        asg_stub.assert_no_pending_responses()


@mock_aws
def test_in_moto_a_detached_instance_is_replaced_and_ending_is_idempotent():
    autoscaling, ec2 = boto3.client("autoscaling", "us-east-1"), boto3.client("ec2", "us-east-1")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    groups = JobGroups(autoscaling, ec2, region="us-east-1")
    record = groups.create(LaunchSpec(image_id=image, instance_types=("t3.micro",), job="j1", created="x",
                                      user_data="#!/bin/bash\n"), group_name("j1"), ())
    assert len(record.subnet_ids) > 1  # the default VPC's subnets, one per AZ
    (first,) = [i["InstanceId"] for i in groups.describe(record.name).instances]
    assert groups.detach(record.name, first)
    (second,) = [i["InstanceId"] for i in groups.describe(record.name).instances]
    assert second != first
    groups.end(record, leaving=second)
    groups.end(record)  # again: nothing left to do
    assert groups.describe(record.name) is None
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []
    states = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
              for i in r["Instances"]}
    assert states[second] == "running"  # it left first; it shuts itself down afterwards


# -- the instance role's policy -------------------------------------------------------------
def allowed(policy: dict, action: str, resource_tags: dict[str, str], resource: str = "*") -> bool:
    """Whether an Allow statement grants ``action`` on a resource with these tags (the
    condition operators runctl's policies use: Null and StringEquals on ResourceTag keys)."""
    import fnmatch

    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if statement["Effect"] != "Allow" or action not in actions:
            continue
        if resource != "*" and not fnmatch.fnmatch(resource, statement["Resource"]):
            continue
        ok = True
        for operator, conditions in statement.get("Condition", {}).items():
            for key, expected in conditions.items():
                tag = key.split("/", 1)[1] if "ResourceTag/" in key else None
                if operator == "Null":
                    ok &= (tag not in resource_tags) == (expected == "true")
                elif operator == "StringEquals":
                    ok &= resource_tags.get(tag) in (expected if isinstance(expected, list) else [expected])
                else:
                    raise AssertionError(f"no evaluator for {operator}")
        if ok:
            return True
    return False


RUNCTL_GROUP = "arn:aws:autoscaling:us-east-1:1:autoScalingGroup:abc:autoScalingGroupName/runctl-j1"
FOREIGN_GROUP = "arn:aws:autoscaling:us-east-1:1:autoScalingGroup:def:autoScalingGroupName/web-tier"


@pytest.mark.parametrize("action", iam.GROUP_ACTIONS)
def test_the_instance_role_may_end_runctl_groups_and_no_foreign_one(action):
    policy = iam.instance_policy("bucket", account="1")
    ours = {"runctl:created": "2026-12-06T00:00:00Z", "runctl:job": "j1"}
    assert allowed(policy, action, ours, RUNCTL_GROUP)
    assert not allowed(policy, action, {"team": "web"}, FOREIGN_GROUP)
    assert not allowed(policy, action, {"team": "web"}, RUNCTL_GROUP.replace("runctl-j1", "runctl-x"))
    # Named like ours but untagged, or tagged but named otherwise: refused too.
    assert not allowed(policy, action, ours, FOREIGN_GROUP)
    assert not allowed(policy, "autoscaling:CreateAutoScalingGroup", ours, RUNCTL_GROUP)


def test_the_instance_role_may_delete_runctl_templates_only_and_the_cli_creates_tagged_groups():
    policy = iam.instance_policy("bucket", account="1")
    template = "arn:aws:ec2:us-east-1:1:launch-template/lt-1"
    assert allowed(policy, "ec2:DeleteLaunchTemplate", {"runctl:created": "x"}, template)
    assert not allowed(policy, "ec2:DeleteLaunchTemplate", {}, template)
    assert not allowed(policy, "ec2:TerminateInstances", {"runctl:created": "x"})
    cli = iam.cli_policy("bucket", account="1")
    create = next(s for s in cli["Statement"] if "autoscaling:CreateAutoScalingGroup" in s["Action"])
    assert create["Condition"] == {"Null": {"aws:RequestTag/runctl:created": "false"}}
    assert allowed(cli, "autoscaling:DeleteAutoScalingGroup", {"runctl:created": "x"})
    assert not allowed(cli, "autoscaling:DeleteAutoScalingGroup", {"team": "web"})
