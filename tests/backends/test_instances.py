"""The life of runctl's instances (runctl.backends.instances) over FakeCompute, in
milliseconds: waiting, requiring a running instance, terminating only what runctl launched.
tests/backends/aws/test_aws_ec2.py proves the same calls against EC2 (moto)."""

from __future__ import annotations

import dataclasses

import pytest

from runctl.backends.aws.launch import LaunchSpec
from runctl.backends.instances import require_running, terminate_one, terminate_tagged, wait_for
from runctl.errors import CloudError, UsageError
from runctl.testing import FakeCompute

SPEC = LaunchSpec(image_id="ami-1", instance_types=("t3.small", "t3.micro"), spot=True, job="job-1",
                  project="proj", user="tester", user_data="#!/bin/bash\necho runctl\n", idempotency_key="k")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def launch(compute, **changes):
    return compute.launch(dataclasses.replace(SPEC, **changes)).instance


def test_waiting():
    # Moved from test_aws_ec2.py's test_unknown_instance_and_waiting (its describe half stays
    # there, on moto): the same assertions, over the contract.
    clock = FakeClock()
    compute = FakeCompute("us-east-1")
    info = launch(compute, spot=False)
    assert wait_for(compute, info.instance_id, timeout=30, sleep=clock.sleep, clock=clock).state == "running"
    with pytest.raises(CloudError, match=r"is still running after 12 s \(waiting for stopped\)"):
        wait_for(compute, info.instance_id, "stopped", timeout=12, poll=5, sleep=clock.sleep, clock=clock)
    assert clock.now >= 12
    compute.terminate([info.instance_id])
    with pytest.raises(CloudError, match="is terminated \\(waiting for running\\)"):
        wait_for(compute, info.instance_id, timeout=30, sleep=clock.sleep, clock=clock)


def test_waiting_through_a_boot():
    clock = FakeClock()
    compute = FakeCompute()
    info = launch(compute, spot=False)
    compute.script(info.instance_id, "pending", "pending", "running")
    assert wait_for(compute, info.instance_id, timeout=30, sleep=clock.sleep, clock=clock).state == "running"
    assert clock.now == 10.0  # two polls of 5 s while it booted


def test_waiting_for_running_stops_at_a_stopped_instance_and_names_the_command():
    clock = FakeClock()
    compute = FakeCompute()
    info = launch(compute, spot=False)
    compute.script(info.instance_id, "stopping")
    with pytest.raises(CloudError, match=rf"^instance {info.instance_id} is stopping \(waiting for running\); "
                                         rf"start it with runctl aws start {info.instance_id}$"):
        wait_for(compute, info.instance_id, timeout=30, sleep=clock.sleep, clock=clock)
    assert clock.now == 0.0
    compute.script(info.instance_id, "stopped")
    assert wait_for(compute, info.instance_id, "stopped", sleep=clock.sleep, clock=clock).state == "stopped"


@pytest.mark.parametrize("state, says", [
    ("stopped", "is stopped; start it with runctl aws start {id}"),
    ("pending", "is pending, not running yet; wait for it with runctl aws wait {id}"),
    ("terminated", "is terminated; launch a new one with runctl aws create"),
])
def test_require_running_says_what_to_do(state, says):
    compute = FakeCompute()
    info = launch(compute)
    assert require_running(compute, info.instance_id) == info
    compute.script(info.instance_id, state)
    with pytest.raises(CloudError, match=f"^instance {info.instance_id} " + says.format(id=info.instance_id)):
        require_running(compute, info.instance_id)


def test_list_and_terminate_tagged_never_touch_an_untagged_instance():
    # The lifecycle half of test_aws_ec2.py's test of the same name, over the contract.
    compute = FakeCompute("us-east-1")
    stranger = compute.add("t3.micro", tags={}).instance_id
    spot = launch(compute)
    on_demand = launch(compute, spot=False, job="job-2")
    assert {i.instance_id for i in compute.list_tagged()} == {spot.instance_id, on_demand.instance_id}
    assert [i.instance_id for i in compute.list_tagged(job="job-2")] == [on_demand.instance_id]

    assert [i.instance_id for i in terminate_tagged(compute, job="job-2", dry_run=True)] == [on_demand.instance_id]
    assert compute.describe(on_demand.instance_id).state == "running"
    gone = terminate_tagged(compute)
    assert {i.instance_id for i in gone} == {spot.instance_id, on_demand.instance_id}
    assert compute.describe(stranger).state == "running"
    assert compute.describe(spot.instance_id).state == "terminated"
    with pytest.raises(UsageError, match=f"instance {stranger} was not launched by runctl"):
        terminate_one(compute, stranger)
    assert compute.describe(stranger).state == "running"
    assert ("terminate", (stranger,)) not in compute.calls


def test_terminate_one_asks_once_and_leaves_a_terminated_instance_be():
    compute = FakeCompute()
    info = launch(compute)
    assert terminate_one(compute, info.instance_id).state == "terminated"
    assert terminate_one(compute, info.instance_id).state == "terminated"
    assert [call for call in compute.calls if call[0] == "terminate"] == [("terminate", (info.instance_id,))]


def test_terminate_tagged_with_nothing_to_do_asks_nothing():
    compute = FakeCompute()
    compute.add(tags={})
    assert terminate_tagged(compute, job="job-1") == []
    assert not [call for call in compute.calls if call[0] == "terminate"]
