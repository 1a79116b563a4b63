"""FakeCompute's own behaviour beyond the contract (tests/backends/aws/test_aws_compute.py
holds it to Ec2Compute's): unknown types, scripted states, refusals that change nothing."""

from __future__ import annotations

import pytest

from runctl.backends.aws.launch import LaunchSpec
from runctl.backends.compute import CAPACITY, UNKNOWN_TYPE
from runctl.errors import CloudNotFound, NoCapacity
from runctl.testing import FakeCompute

SPEC = LaunchSpec(image_id="ami-1", instance_types=("g5.xlarge", "g6.xlarge", "t3.micro"), job="job-1",
                  subnet_ids=("subnet-a", "subnet-b"))


def test_launch_tries_each_type_in_each_subnet_and_names_why_it_skipped():
    compute = FakeCompute(no_capacity={"g5.xlarge"}, unknown_types={"g6.xlarge"})
    launched = compute.launch(SPEC)
    assert (launched.instance.instance_type, launched.instance.subnet_id) == ("t3.micro", "subnet-a")
    assert [(s.instance_type, s.subnet_id, s.reason) for s in launched.skipped] == [
        ("g5.xlarge", "subnet-a", CAPACITY), ("g5.xlarge", "subnet-b", CAPACITY),
        ("g6.xlarge", "subnet-a", UNKNOWN_TYPE), ("g6.xlarge", "subnet-b", UNKNOWN_TYPE)]
    assert launched.instance.tags["runctl:job"] == "job-1" and launched.instance.image_id == "ami-1"
    compute.no_capacity.add("t3.micro")
    with pytest.raises(NoCapacity, match=r"^no spot capacity for g5.xlarge, g6.xlarge, t3.micro \(g5.xlarge in "
                                         r"subnet-a: InsufficientInstanceCapacity; "):
        compute.launch(SPEC)


def test_a_script_plays_its_states_then_keeps_the_last_and_terminating_ends_it():
    compute = FakeCompute()
    instance = compute.add()
    compute.script(instance.instance_id, "pending", "running", "stopping")
    assert [compute.describe(instance.instance_id).state for _ in range(4)] == [
        "pending", "running", "stopping", "stopping"]
    compute.terminate([instance.instance_id])
    assert compute.describe(instance.instance_id).state == "terminated"


def test_an_unknown_instance_is_not_found_and_a_terminate_naming_one_ends_nothing():
    compute = FakeCompute()
    known = compute.add()
    with pytest.raises(CloudNotFound, match="^instance i-nope not found in fake-region$"):
        compute.terminate([known.instance_id, "i-nope"])
    assert compute.describe(known.instance_id).state == "running"
    with pytest.raises(CloudNotFound):
        compute.script("i-nope", "running")
    assert [op for op, _ in compute.calls] == ["terminate", "describe"]
