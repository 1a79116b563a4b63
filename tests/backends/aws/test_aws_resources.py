"""runctl's resources in a region: listed and removed, and nothing else touched."""

from __future__ import annotations

import dataclasses

from runctl.backends.aws.launch import launch_template_request
from runctl.backends.aws.provision import Provisioner
from runctl.backends.aws.resources import cleanup, list_resources


def state(client, instance_id: str) -> str:
    return client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_cleanup_removes_only_what_runctl_tagged(ec2_client, spec, image_id):
    stranger = ec2_client.run_instances(ImageId=image_id, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                        TagSpecifications=[{"ResourceType": "instance",
                                                            "Tags": [{"Key": "Name", "Value": "not-runctl"}]}],
                                        )["Instances"][0]["InstanceId"]
    foreign_template = ec2_client.create_launch_template(LaunchTemplateName="someone-elses",
                                                         LaunchTemplateData={"ImageId": image_id})
    spot = Provisioner(ec2_client, region="us-east-1").create_instance(spec)
    on_demand = Provisioner(ec2_client, region="us-east-1").create_instance(dataclasses.replace(spec, spot=False,
                                                                                                job="other"))
    leftover = ec2_client.create_launch_template(**launch_template_request(spec))["LaunchTemplate"]

    found = list_resources(ec2_client, "us-east-1")
    assert {(r.kind, r.id) for r in found} == {
        ("instance", spot.instance_id), ("instance", on_demand.instance_id),
        ("launch-template", leftover["LaunchTemplateId"]), ("fleet", next(r.id for r in found if r.kind == "fleet"))}
    assert [r.id for r in list_resources(ec2_client, "us-east-1", job="other")] == [on_demand.instance_id]

    print("BEFORE", ec2_client.describe_spot_instance_requests()["SpotInstanceRequests"])
    planned = cleanup(ec2_client, "us-east-1", found, dry_run=True)
    assert {r.id for r in planned} == {r.id for r in found}
    assert state(ec2_client, spot.instance_id) == "running"

    removed = cleanup(ec2_client, "us-east-1", found)
    assert {r.id for r in removed} == {r.id for r in found}
    assert state(ec2_client, stranger) == "running"
    assert state(ec2_client, spot.instance_id) == "terminated" == state(ec2_client, on_demand.instance_id)
    templates = [t["LaunchTemplateId"] for t in ec2_client.describe_launch_templates()["LaunchTemplates"]]
    assert templates == [foreign_template["LaunchTemplate"]["LaunchTemplateId"]]
    assert list_resources(ec2_client, "us-east-1") == []


def test_cleanup_of_a_spot_instance_cancels_its_request(ec2_client, spec):
    spot = Provisioner(ec2_client, region="us-east-1").create_instance(spec)
    instances = [r for r in list_resources(ec2_client, "us-east-1") if r.kind == "instance"]
    assert [r.id for r in instances] == [spot.instance_id]

    def live_requests() -> list[str]:
        found = ec2_client.describe_spot_instance_requests()["SpotInstanceRequests"]
        return [r["SpotInstanceRequestId"] for r in found if r["State"] in ("open", "active")]

    assert live_requests()
    cleanup(ec2_client, "us-east-1", instances)  # the instance alone, as when its fleet is gone
    assert state(ec2_client, spot.instance_id) == "terminated"
    assert live_requests() == []  # an open request would be left behind (or relaunch, if persistent)


def test_job_groups_are_listed_and_removed_first_and_a_foreign_group_is_kept(aws, ec2_client, spec, image_id):
    from runctl.backends.aws.autoscaling import group_name
    from runctl.backends.aws.job_group import JobGroups

    autoscaling = aws.client("autoscaling")
    template = ec2_client.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={
        "ImageId": image_id, "InstanceType": "t3.micro"})["LaunchTemplate"]["LaunchTemplateId"]
    subnet = ec2_client.describe_subnets()["Subnets"][0]["SubnetId"]
    autoscaling.create_auto_scaling_group(AutoScalingGroupName="web-tier", MinSize=1, MaxSize=1, DesiredCapacity=1,
                                          LaunchTemplate={"LaunchTemplateId": template}, VPCZoneIdentifier=subnet)
    job_spec = dataclasses.replace(spec, image_id=image_id, job="grouped")
    record = JobGroups(autoscaling, ec2_client, region="us-east-1").create(job_spec, group_name("grouped"), ())

    found = list_resources(ec2_client, "us-east-1", autoscaling=autoscaling)
    groups = [r for r in found if r.kind == "auto-scaling-group"]
    assert [(g.id, g.job) for g in groups] == [(record.name, "grouped")]
    assert [r.kind for r in found if r.job == "grouped"][:1] == ["auto-scaling-group"]

    removed = cleanup(ec2_client, "us-east-1", found, autoscaling=autoscaling)
    assert [r.kind for r in removed][:1] == ["auto-scaling-group"]
    names = [g["AutoScalingGroupName"] for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]]
    assert names == ["web-tier"]
    assert [t["LaunchTemplateName"] for t in ec2_client.describe_launch_templates()["LaunchTemplates"]] == ["web"]
