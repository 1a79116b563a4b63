"""The recovery controller in-process, against moto's EC2 (no agents): it relaunches on a spot
notice recorded in status.json, moves on to the next instance type when the first has no
capacity, backs off between failed launches, and gives up with a clear final state."""

from __future__ import annotations

import dataclasses
import json

import pytest
from botocore.exceptions import ClientError

from runctl.agent.assignment import read_assignment
from runctl.agent.cancellation import mark_cancelled
from runctl.agent.status import read_status
from runctl.backends.aws.launch import LaunchSpec
from runctl.backends.aws.provision import Provisioner
from runctl.errors import CloudError
from runctl.models import Attempt, JobStatus
from runctl.resume.controller import RecoveryController
from runctl.resume.records import read_recoveries
from runctl.store import layout

JOB = "job-r"


class ShortOf:
    """The EC2 client, but RunInstances of ``types`` answers InsufficientInstanceCapacity."""

    def __init__(self, client, types) -> None:
        self._client, self.types, self.asked = client, set(types), []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def run_instances(self, **request):
        self.asked.append(request["InstanceType"])
        if request["InstanceType"] in self.types:
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "no capacity"}},
                              "RunInstances")
        return self._client.run_instances(**request)


@pytest.fixture
def ec2_client(moto_reset):
    from runctl.backends.aws.session import AwsSession

    return AwsSession("us-east-1", max_attempts=1).client("ec2")


@pytest.fixture
def spec(ec2_client):
    image = ec2_client.describe_images()["Images"][0]["ImageId"]
    return LaunchSpec(image_id=image, instance_types=("t3.micro",), spot=False, job=JOB, project="p", user="u",
                      user_data="#!/bin/bash\n", idempotency_key="first")


def write_status(store, state, instance_id, notice=None):
    status = JobStatus(JOB, state, (Attempt(0, 1.0, instance_id=instance_id),), heartbeat=1.0, notice=notice)
    store.write(layout.status_key(JOB), json.dumps(status.to_dict()).encode())


def live(ec2_client) -> list[str]:
    return [i["InstanceId"] for r in ec2_client.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] in ("pending", "running")]


def controller(store, client, first_id, spec, *, types, steps, **options):
    """A controller whose sleep plays ``steps`` (one per poll): callables given the controller."""
    provisioner = Provisioner(client, region="us-east-1", sleep=lambda s: None)
    slept: list[float] = []

    def sleep(seconds):
        slept.append(seconds)
        if steps:
            steps.pop(0)(made)

    made = RecoveryController(
        store, JOB, first_id, ec2=provisioner.ec2, provisioner=provisioner,
        launch_spec=lambda old: dataclasses.replace(spec, instance_types=types), sleep=sleep, **options)
    made.slept = slept
    return made


def test_a_capacity_error_moves_on_to_the_next_type(local_store, ec2_client, spec):
    first = Provisioner(ec2_client, region="us-east-1").create_instance(spec).instance_id
    write_status(local_store, "running", first, notice={"source": "spot", "action": "terminate", "received": 1.0})
    short = ShortOf(ec2_client, {"t3.small"})

    def job_completes_on_the_replacement(ctl):
        write_status(local_store, "completed", ctl.current)

    ctl = controller(local_store, short, first, spec, types=("t3.small", "t3.micro"), max_restarts=3,
                     steps=[job_completes_on_the_replacement])
    outcome = ctl.run()

    assert outcome.state == "completed" and outcome.recoveries == 1
    assert short.asked == ["t3.small", "t3.micro"]
    (record,) = read_recoveries(local_store, JOB)[0]["recoveries"]
    assert record["old_instance"] == first and record["instance_type"] == "t3.micro"
    assert record["skipped"] == ["t3.small: InsufficientInstanceCapacity"]
    assert record["launch_requested"] >= record["notice_seen"] and record["assigned_at"] >= record["launched_at"]
    assert read_assignment(local_store, record["launched"])[0].job_id == JOB
    # The replacement was terminated at the end (not --keep); the first instance is the caller's.
    assert live(ec2_client) == [first]
    ec2_client.terminate_instances(InstanceIds=[first])


def test_failed_launches_back_off_then_give_up(local_store, ec2_client, spec):
    first = Provisioner(ec2_client, region="us-east-1").create_instance(spec).instance_id
    ec2_client.terminate_instances(InstanceIds=[first])  # lost without a notice
    write_status(local_store, "running", first)
    ctl = controller(local_store, ShortOf(ec2_client, {"t3.micro"}), first, spec, types=("t3.micro",),
                     max_restarts=3, max_launch_failures=4, steps=[])
    outcome = ctl.run()
    assert ctl.slept == [1, 2, 4]
    assert outcome.state == "failed" and "gave up after 0 recoveries: 4 launches failed" in outcome.message
    status = read_status(local_store, JOB)
    assert status.state == "failed" and status.message.startswith("gave up after 0 recoveries")
    assert len(read_recoveries(local_store, JOB)[0]["recoveries"][0]["errors"]) == 4
    assert live(ec2_client) == []


def test_more_recoveries_than_max_restarts_gives_up(local_store, ec2_client, spec):
    first = Provisioner(ec2_client, region="us-east-1").create_instance(spec).instance_id
    write_status(local_store, "interrupted", first)
    outcome = controller(local_store, ec2_client, first, spec, types=("t3.micro",), max_restarts=0, steps=[]).run()
    assert outcome.state == "failed" and outcome.message.startswith("gave up after 0 recoveries: the job was interrupted")
    assert read_status(local_store, JOB).state == "failed"
    ec2_client.terminate_instances(InstanceIds=[first])


def test_cancel_stops_the_controller_and_terminates_what_it_launched(local_store, ec2_client, spec):
    first = Provisioner(ec2_client, region="us-east-1").create_instance(spec).instance_id
    write_status(local_store, "interrupted", first)

    def cancel(ctl):
        mark_cancelled(local_store, JOB)

    outcome = controller(local_store, ec2_client, first, spec, types=("t3.micro",), max_restarts=3,
                         steps=[cancel]).run()
    assert outcome.state == "cancelled" and outcome.recoveries == 1
    assert live(ec2_client) == [first]  # the replacement is gone; the first is the caller's (aws cancel ends it)
    ec2_client.terminate_instances(InstanceIds=[first])


def test_a_describe_error_is_not_a_lost_instance(local_store, ec2_client, spec):
    first = Provisioner(ec2_client, region="us-east-1").create_instance(spec).instance_id
    write_status(local_store, "running", first)

    class Flaky:
        def __init__(self, ec2):
            self.ec2, self.calls = ec2, 0

        def __getattr__(self, name):
            return getattr(self.ec2, name)

        def describe(self, instance_id, **kw):
            self.calls += 1
            if self.calls == 2:
                raise CloudError("AWS is throttling requests")
            return self.ec2.describe(instance_id, **kw)

    provisioner = Provisioner(ec2_client, region="us-east-1")
    steps = [lambda: None, lambda: write_status(local_store, "completed", first)]
    ctl = RecoveryController(local_store, JOB, first, ec2=Flaky(provisioner.ec2), provisioner=provisioner,
                             launch_spec=lambda old: spec, max_restarts=3, sleep=lambda s: steps.pop(0)())
    ctl._state = "running"
    assert ctl.run().state == "completed"
    assert read_recoveries(local_store, JOB)[0]["recoveries"] == []
    ec2_client.terminate_instances(InstanceIds=[first])


def test_a_reclaimed_replacement_is_terminated_only_after_its_final_snapshot(local_store, ec2_client, spec):
    """The second reclaim: the dying replacement goes on until its attempt has ended (its
    final snapshot is durable then) instead of being terminated as soon as the next one runs."""
    first = Provisioner(ec2_client, region="us-east-1").create_instance(spec).instance_id
    write_status(local_store, "running", first, notice={"source": "spot", "action": "terminate", "received": 1.0})
    seen: dict[str, object] = {}

    def status(*attempts, state="running", notice=None):
        done = JobStatus(JOB, state, tuple(Attempt(n, 1.0 + n, instance_id=i, ended=e)
                                           for n, (i, e) in enumerate(attempts)), heartbeat=1.0, notice=notice)
        local_store.write(layout.status_key(JOB), json.dumps(done.to_dict()).encode())

    def second_is_reclaimed(ctl):
        seen["second"] = ctl.current
        notice = {"source": "spot", "action": "terminate", "received": 2.0, "deadline": 4e9}  # far ahead
        status((first, 1.5), (ctl.current, None), notice=notice)

    def still_saving(ctl):
        seen["third"] = ctl.current
        seen["alive_while_saving"] = seen["second"] in live(ec2_client)
        status((first, 1.5), (seen["second"], None), (ctl.current, None))  # its attempt has not ended

    def final_snapshot_made(ctl):
        seen["alive_after_one_more_poll"] = seen["second"] in live(ec2_client)
        status((first, 1.5), (seen["second"], 3.0), (ctl.current, None))

    def terminated_then_done(ctl):
        seen["alive_after_its_end"] = seen["second"] in live(ec2_client)
        status((first, 1.5), (seen["second"], 3.0), (ctl.current, None), state="completed")

    ctl = controller(local_store, ec2_client, first, spec, types=("t3.micro",), max_restarts=3,
                     steps=[second_is_reclaimed, still_saving, final_snapshot_made, terminated_then_done])
    outcome = ctl.run()

    assert outcome.state == "completed" and outcome.recoveries == 2
    assert seen["second"] != seen["third"]
    assert seen["alive_while_saving"] and seen["alive_after_one_more_poll"]
    assert not seen["alive_after_its_end"]
    ec2_client.terminate_instances(InstanceIds=[first])
