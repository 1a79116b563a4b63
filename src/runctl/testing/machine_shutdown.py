"""``shutdown`` on a fake-cloud machine: what the OS command does to an EC2 instance.

The fake cloud puts a ``shutdown`` that runs this on the PATH of every instance's agent,
as a machine of its own would have one. ``shutdown -h now`` (or ``-P``, ``poweroff``) asks
EC2, here moto, to end this instance as AWS would: terminated when its shutdown behaviour
says so (runctl's spot instances and group instances), else stopped. A delayed shutdown
(``+N``) and ``-c`` answer as the real command does; nothing on this machine arms one.
"""

from __future__ import annotations

import os
import sys

INSTANCE_ENV = "RUNCTL_FAKE_INSTANCE_ID"
#: terminate or stop: what EC2 does on a shutdown from inside, as the instance was launched.
BEHAVIOUR_ENV = "RUNCTL_FAKE_SHUTDOWN_BEHAVIOUR"


def shutdown_behaviour(ec2, described: dict) -> str:
    """terminate or stop, as the instance was launched: spot and group instances terminate;
    else its launch template's or its own InstanceInitiatedShutdownBehavior (which moto does
    not always copy from a template), EC2's default being stop. Asked at boot, while the
    template still exists."""
    instance_id = described["InstanceId"]
    tags = {t["Key"]: t.get("Value", "") for t in described.get("Tags", ())}
    if described.get("InstanceLifecycle") == "spot" or "aws:autoscaling:groupName" in tags:
        return "terminate"
    template = tags.get("aws:ec2launchtemplate:id")
    try:
        if template:
            versions = ec2.describe_launch_template_versions(LaunchTemplateId=template)["LaunchTemplateVersions"]
            found = [v["LaunchTemplateData"].get("InstanceInitiatedShutdownBehavior") for v in versions]
            if any(found):
                return next(f for f in found if f)
        attribute = ec2.describe_instance_attribute(InstanceId=instance_id,
                                                    Attribute="instanceInitiatedShutdownBehavior")
        return attribute.get("InstanceInitiatedShutdownBehavior", {}).get("Value") or "stop"
    except Exception:  # the template is gone, or moto does not keep the attribute: EC2's default
        return "stop"


def terminate(ec2, instance_id: str) -> None:
    """Terminate the instance as EC2 does, its one-time spot request closing with it (moto's
    nearest state: cancelled; moto leaves it active)."""
    found = ec2.describe_spot_instance_requests(
        Filters=[{"Name": "instance-id", "Values": [instance_id]}])["SpotInstanceRequests"]
    requests = [r["SpotInstanceRequestId"] for r in found if r.get("State") in ("open", "active")]
    if requests:
        ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=requests)
    ec2.terminate_instances(InstanceIds=[instance_id])


def main(argv: list[str] | None = None) -> int:
    import boto3

    args = sys.argv[1:] if argv is None else argv
    if "-c" in args or any(a.startswith("+") for a in args):
        return 0  # cancel / schedule: nothing is scheduled on a fake machine
    instance_id = os.environ.get(INSTANCE_ENV)
    if not instance_id:
        print("shutdown: not a fake-cloud machine (no instance id)", file=sys.stderr)
        return 1
    ec2 = boto3.client("ec2")
    if os.environ.get(BEHAVIOUR_ENV, "stop") == "terminate":
        terminate(ec2, instance_id)
    else:
        ec2.stop_instances(InstanceIds=[instance_id])
    return 0


if __name__ == "__main__":
    sys.exit(main())
