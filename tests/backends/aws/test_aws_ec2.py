"""The EC2 adapter against moto: describe, stop/start/terminate, tagged listing, types; and the
instance lifecycle (runctl.backends.instances) over EC2. Waiting is tested over FakeCompute
(tests/backends/test_instances.py); the contract itself in test_aws_compute.py."""

from __future__ import annotations

import dataclasses

import pytest

from runctl.backends.aws.compute import Ec2Compute
from runctl.backends.aws.ec2 import Ec2
from runctl.backends.aws.provision import Provisioner
from runctl.backends.instances import require_running, terminate_one, terminate_tagged
from runctl.errors import CloudError, UsageError


def launch(client, spec, **changes):
    return Provisioner(client, region="us-east-1").create_instance(dataclasses.replace(spec, **changes))


def untagged(client, image_id: str) -> str:
    """An instance launched without runctl (plain boto3, no tags)."""
    return client.run_instances(ImageId=image_id, InstanceType="t3.micro", MinCount=1, MaxCount=1)[
        "Instances"][0]["InstanceId"]


def test_list_and_terminate_tagged_never_touch_an_untagged_instance(ec2_client, spec, image_id):
    stranger = untagged(ec2_client, image_id)
    spot = launch(ec2_client, spec)
    on_demand = launch(ec2_client, spec, spot=False, job="job-2")
    ec2 = Ec2(ec2_client, region="us-east-1")
    compute = Ec2Compute(ec2_client, region="us-east-1")
    assert {i.instance_id for i in ec2.list_tagged()} == {spot.instance_id, on_demand.instance_id}
    assert [i.instance_id for i in ec2.list_tagged(spot=True)] == [spot.instance_id]  # filtered here, not by moto
    assert [i.instance_id for i in ec2.list_tagged(job="job-2")] == [on_demand.instance_id]

    assert [i.instance_id for i in terminate_tagged(compute, job="job-2", dry_run=True)] == [on_demand.instance_id]
    assert ec2.describe(on_demand.instance_id).state == "running"
    gone = terminate_tagged(compute)
    assert {i.instance_id for i in gone} == {spot.instance_id, on_demand.instance_id}
    assert ec2.describe(stranger).state == "running"
    assert ec2.describe(spot.instance_id).state == "terminated"
    with pytest.raises(UsageError, match=f"instance {stranger} was not launched by runctl"):
        terminate_one(compute, stranger)
    assert ec2.describe(stranger).state == "running"


def test_stop_start_and_the_states_that_refuse(ec2_client, spec):
    ec2 = Ec2(ec2_client, region="us-east-1")
    compute = Ec2Compute(ec2_client, region="us-east-1")
    server = launch(ec2_client, spec, spot=False)
    assert ec2.stop(server.instance_id).state in ("stopping", "stopped")
    with pytest.raises(CloudError, match=rf"^instance {server.instance_id} is stopped; start it with "
                                         rf"runctl aws start {server.instance_id}$"):
        require_running(compute, server.instance_id)
    assert ec2.start(server.instance_id).state in ("pending", "running")
    assert terminate_one(compute, server.instance_id).state in ("shutting-down", "terminated")
    with pytest.raises(CloudError, match="is terminated; there is nothing to stop"):
        ec2.stop(server.instance_id)
    with pytest.raises(CloudError, match="is terminated and cannot be started"):
        ec2.start(server.instance_id)
    spot = launch(ec2_client, spec)
    with pytest.raises(UsageError, match="one-time spot instance: it cannot be stopped, only terminated"):
        ec2.stop(spot.instance_id)


def test_unknown_instance(ec2_client):
    # Waiting, this test's second half before the compute contract, runs over FakeCompute now
    # (tests/backends/test_instances.py: test_waiting).
    ec2 = Ec2(ec2_client, region="us-east-1")
    with pytest.raises(CloudError, match="^instance i-0123456789abcdef0 not found in us-east-1$"):
        ec2.describe("i-0123456789abcdef0")
    with pytest.raises(UsageError, match="not an EC2 instance id"):
        ec2.describe("i-nope")


def test_instance_types_are_checked_against_the_region(ec2_client):
    ec2 = Ec2(ec2_client, region="us-east-1")
    ec2.check_instance_types(["t3.micro", "g5.xlarge"])
    with pytest.raises(UsageError, match=r"^unknown instance type 't3.mega'; did you mean 't3.medium'\?"):
        ec2.check_instance_types(["t3.micro", "t3.mega"])
    with pytest.raises(UsageError, match=r"^unknown instance type 't9.large' in us-east-1; did you mean 't3.large'"):
        ec2.check_instance_types(["t3.micro", "t9.large"])  # the right shape: only the region knows


def test_spot_price_history(ec2_client):
    records = Ec2(ec2_client, region="us-east-1").spot_price_history("t3.micro", 1.7e9, 1.7e9 + 3600, "us-east-1a")
    assert records and all(az == "us-east-1a" and price > 0 for az, _, price in records)
