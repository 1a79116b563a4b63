"""The compute contract (runctl.backends.compute), kept alike by its two implementations:
Ec2Compute against moto (a capacity shortage played by the conftest's wrapper, as AWS
answers one) and runctl.testing.FakeCompute, which the lifecycle tests run on."""

from __future__ import annotations

import dataclasses
import types

import pytest

from runctl.backends.aws.compute import Ec2Compute
from runctl.backends.compute import CAPACITY, Compute, Launched
from runctl.errors import CloudNotFound, NoCapacity
from runctl.testing import FakeCompute
from runctl.testing.fake_compute import FakeCompute as FakeComputeItself


@pytest.fixture(params=["fake", "ec2"])
def side(request):
    """``side.make(no_capacity=())`` -> a Compute; ``side.stranger(compute)``: an instance
    runctl did not launch; ``side.spec``: a LaunchSpec for it."""
    if request.param == "fake":
        from runctl.backends.aws.launch import LaunchSpec

        spec = LaunchSpec(image_id="ami-1", instance_types=("t3.small", "t3.micro"), spot=True, job="job-1",
                          project="proj", user="tester", user_data="#!/bin/bash\necho runctl\n", idempotency_key="k")
        return types.SimpleNamespace(
            make=lambda no_capacity=(): FakeCompute("us-east-1", no_capacity=no_capacity),
            stranger=lambda compute: compute.add("t3.micro", tags={}).instance_id, spec=spec)
    client = request.getfixturevalue("ec2_client")
    wrappers = request.getfixturevalue("wrappers")
    spec = request.getfixturevalue("spec")

    def make(no_capacity=()):
        return Ec2Compute(wrappers.CapacityShortage(client, set(no_capacity)) if no_capacity else client,
                          region="us-east-1")

    def stranger(_compute) -> str:
        return client.run_instances(ImageId=spec.image_id, InstanceType="t3.micro", MinCount=1, MaxCount=1)[
            "Instances"][0]["InstanceId"]

    return types.SimpleNamespace(make=make, stranger=stranger, spec=spec)


def test_both_keep_the_protocol_and_the_fake_is_shipped():
    assert FakeCompute is FakeComputeItself
    assert isinstance(FakeCompute(), Compute) and isinstance(Ec2Compute(None), Compute)


def test_launch_gives_the_first_type_with_capacity_tagged_for_its_job(side):
    launched = side.make().launch(side.spec)
    assert isinstance(launched, Launched) and launched.skipped == ()
    info = launched.instance
    assert (info.instance_type, info.lifecycle, info.job_id) == ("t3.small", "spot", "job-1")
    assert {k: info.tags[k] for k in ("runctl:project", "runctl:user")} == {"runctl:project": "proj",
                                                                             "runctl:user": "tester"}
    assert info.tags["runctl:created"]


def test_launch_skips_a_type_without_capacity_and_says_so(side):
    launched = side.make(no_capacity={"t3.small"}).launch(dataclasses.replace(side.spec, spot=False))
    assert launched.instance.instance_type == "t3.micro" and launched.instance.lifecycle == "on-demand"
    assert [(s.instance_type, s.reason, s.code) for s in launched.skipped] == [
        ("t3.small", CAPACITY, "InsufficientInstanceCapacity")]
    assert str(launched.skipped[0]) == "t3.small: InsufficientInstanceCapacity"


def test_no_capacity_anywhere_is_no_capacity(side):
    with pytest.raises(NoCapacity, match=r"^no spot capacity for t3.small, t3.micro \(t3.small: Insufficient"
                                         r"InstanceCapacity; t3.micro: InsufficientInstanceCapacity\); add "
                                         r"--fallback-types"):
        side.make(no_capacity={"t3.small", "t3.micro"}).launch(side.spec)


def test_describe_terminate_and_list_tagged(side):
    compute = side.make()
    stranger = side.stranger(compute)
    mine = compute.launch(side.spec).instance
    other = compute.launch(dataclasses.replace(side.spec, job="job-2", idempotency_key="k2")).instance
    assert compute.describe(mine.instance_id).state == "running"
    # Oldest first; EC2 gives launch times to the second, so two launches may tie: a set here.
    assert {i.instance_id for i in compute.list_tagged()} == {mine.instance_id, other.instance_id}
    assert [i.instance_id for i in compute.list_tagged(job="job-2")] == [other.instance_id]
    compute.terminate([mine.instance_id])
    assert compute.describe(mine.instance_id).state in ("shutting-down", "terminated")
    assert [i.instance_id for i in compute.list_tagged()] == [other.instance_id]
    assert mine.instance_id in [i.instance_id for i in compute.list_tagged(states=())]
    assert compute.describe(stranger).state == "running"
    with pytest.raises(CloudNotFound, match="^instance i-0123456789abcdef0 not found in us-east-1$"):
        compute.describe("i-0123456789abcdef0")
