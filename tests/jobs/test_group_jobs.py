"""The job lifecycle library (``runctl.jobs``) against ``FakeGroups``, ``FakeCompute`` and a
local store: submitting, following and cancelling a job that lives in its group (or on an
instance), in milliseconds."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest

from runctl.agent import group_record as records
from runctl.agent.cancellation import cancelled
from runctl.agent.status import read_status
from runctl.backends.aws.launch import LaunchSpec
from runctl.errors import UsageError
from runctl.jobs.cancel import cancel_group_job, cancel_job
from runctl.jobs.follow import follow_group_job
from runctl.jobs.submit import GroupRules, submit_group_job
from runctl.models import Attempt, JobSpec, JobStatus
from runctl.store import layout
from runctl.store.local import LocalStore
from runctl.testing import FakeCompute, FakeGroups

JOB = "job-1"
LAUNCH = LaunchSpec(image_id="ami-1", instance_types=("g5.xlarge", "g4dn.xlarge"), job=JOB)


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def spec() -> JobSpec:
    return JobSpec(JOB, ("python", "train.py"), "s3://bucket/runctl", checkpoint_dir="", workdir="")


def write_status(store, status: JobStatus) -> None:
    store.write(layout.status_key(status.job_id), json.dumps(status.to_dict()).encode())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_submit_writes_the_rules_before_the_group_launches_and_refuses_a_running_job(store):
    groups = FakeGroups()
    seen_at_launch = []
    original = groups.add
    groups.add = lambda name, size=1: seen_at_launch.append(records.read_group(store, JOB)) or original(name, size)
    submitted = submit_group_job(store, groups, spec(), LAUNCH, GroupRules(max_restarts=5), clock=lambda: 42.0)
    assert submitted.group.name == "runctl-job-1" and submitted.first_attempt == 0
    (settings,) = seen_at_launch
    assert settings["max_restarts"] == 5 and settings["submitted"] == 42.0
    assert settings["group"]["instance_types"] == ["g5.xlarge", "g4dn.xlarge"]
    assert json.loads(store.read(layout.job_key(JOB)).data)["command"] == ["python", "train.py"]

    with pytest.raises(UsageError, match="job job-1 runs already .*runctl aws watch job-1"):
        submit_group_job(store, groups, spec(), LAUNCH, GroupRules())


def test_a_job_of_several_nodes_gets_a_group_of_that_many_instances(store):
    groups = FakeGroups()
    submitted = submit_group_job(store, groups, dataclasses.replace(spec(), nodes=3), LAUNCH, GroupRules())
    assert submitted.group.size == 3
    assert groups.describe(submitted.group.name).desired == 3


def test_submitting_a_stopped_job_again_resumes_it(store):
    groups = FakeGroups()
    first = submit_group_job(store, groups, spec(), LAUNCH, GroupRules())
    groups.end(first.group)
    records.mark_ended(store, JOB, "stopped", "cancelled", by="test")
    records.add_boot_failure(store, JOB, "i-1")
    from runctl.agent.cancellation import mark_cancelled

    mark_cancelled(store, JOB)
    write_status(store, JobStatus(JOB, "stopped", (Attempt(0, 1.0, reason="stopped"),)))
    again = submit_group_job(store, groups, spec(), LAUNCH, GroupRules())
    assert again.first_attempt == 1
    assert read_status(store, JOB).state == "pending"
    assert cancelled(store, JOB) is None and records.boot_failures(store, JOB) == []
    assert "ended" not in records.read_group(store, JOB)


def test_follow_shows_each_log_chunk_once_each_recovery_and_ends_with_the_group(store):
    records.write_group(store, JOB, {"group": {}})
    sink, notes = io.BytesIO(), []
    clock = FakeClock()
    steps = iter([
        lambda: store.write(layout.logs_prefix(JOB, 0) + "000000.log", b"step 1\n"),
        lambda: records.add_recovery(store, JOB, {"reason": "spot notice", "old_instance": "i-1",
                                                  "notice_seen": 10.0, "launch_requested": 10.5}),
        lambda: records.update_recovery(store, JOB, "i-1", launched="i-2", az="us-east-1b",
                                        instance_type="g5.xlarge"),
        lambda: store.write(layout.logs_prefix(JOB, 1) + "000000.log", b"step 2\n"),
        lambda: records.mark_ended(store, JOB, "completed", "the script finished", by="i-2"),
    ])

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        next(steps, lambda: None)()

    result = follow_group_job(store, JOB, first_attempt=0, sink=sink, note=notes.append, clock=clock,
                              sleep=sleep)
    assert sink.getvalue() == b"step 1\nstep 2\n"
    assert (result.state, result.message, result.recoveries) == ("completed", "the script finished", 1)
    assert notes == ["runctl: i-1 was reclaimed (spot notice, replacement requested 0.5s after the notice); "
                     "job job-1 resumes on i-2 (g5.xlarge, us-east-1b)"]


def test_follow_gives_up_after_its_timeout_and_the_job_goes_on(store):
    records.write_group(store, JOB, {"group": {}})
    clock = FakeClock()
    result = follow_group_job(store, JOB, first_attempt=0, sink=io.BytesIO(), note=lambda line: None,
                              timeout=30, clock=clock, sleep=clock.sleep)
    assert result.state == "timed-out" and "runctl aws watch job-1" in result.message


def test_cancel_waits_for_the_agent_then_ends_the_group_itself(store):
    groups = FakeGroups()
    submitted = submit_group_job(store, groups, spec(), LAUNCH, GroupRules())
    clock = FakeClock()
    write_status(store, JobStatus(JOB, "running", (Attempt(0, 1.0),), heartbeat=clock.now))
    # No agent stops it (a replacement still booting): the group goes after the timeout.
    result = cancel_group_job(store, JOB, groups, timeout=20, clock=clock, sleep=clock.sleep)
    assert not result.by_agent and result.state == "stopped"
    assert groups.groups[submitted.group.name].ended
    assert records.read_group(store, JOB)["ended"]["state"] == "stopped"
    assert cancelled(store, JOB) is not None


def test_cancel_returns_once_the_agent_stopped_the_job_and_ended_the_group(store):
    groups = FakeGroups()
    submit_group_job(store, groups, spec(), LAUNCH, GroupRules())
    clock = FakeClock()

    def agent_reacts(seconds: float) -> None:
        clock.sleep(seconds)
        if cancelled(store, JOB) and clock.now > 1002:
            write_status(store, JobStatus(JOB, "stopped", (Attempt(0, 1.0, reason="stopped"),), heartbeat=clock.now))
            records.mark_ended(store, JOB, "stopped", "cancelled (runctl aws cancel)", by="i-1")

    result = cancel_group_job(store, JOB, groups, timeout=150, clock=clock, sleep=agent_reacts)
    assert result.by_agent and clock.now < 1010


def test_cancel_job_ends_the_group_then_terminates_only_the_jobs_instances(store):
    groups, compute = FakeGroups(), FakeCompute()
    submit_group_job(store, groups, spec(), LAUNCH, GroupRules())
    left = compute.launch(LAUNCH).instance  # e.g. a replacement the group launched as it went
    other = compute.launch(LaunchSpec(image_id="ami-1", instance_types=("t3.micro",), job="job-2")).instance
    stranger = compute.add(tags={})
    clock, waited = FakeClock(), []
    write_status(store, JobStatus(JOB, "running", (Attempt(0, 1.0),), heartbeat=clock.now))
    result = cancel_job(store, JOB, groups, compute, timeout=20, waiting=lambda: waited.append(clock.now),
                        clock=clock, sleep=clock.sleep)
    assert (result.stopped_by_agent, result.terminated, result.state) == (False, (left.instance_id,), "stopped")
    assert waited == [1000.0]
    assert records.read_group(store, JOB)["ended"]["state"] == "stopped"
    assert compute.describe(left.instance_id).state == "terminated"
    assert compute.describe(other.instance_id).state == compute.describe(stranger.instance_id).state == "running"
    assert read_status(store, JOB).state == "stopped"


def test_cancel_job_of_a_job_on_an_instance_marks_it_and_terminates_its_instance(store):
    compute = FakeCompute()
    write_status(store, JobStatus(JOB, "running", (Attempt(0, 1.0, instance_id="i-1"),)))
    mine = compute.launch(LAUNCH).instance
    result = cancel_job(store, JOB, FakeGroups(), compute, waiting=lambda: pytest.fail("no group to wait for"))
    assert (result.stopped_by_agent, result.terminated, result.state) == (None, (mine.instance_id,), "stopped")
    assert cancelled(store, JOB) is not None
    status = read_status(store, JOB)
    assert (status.state, status.message) == ("stopped", "cancelled (runctl aws cancel)")
    assert cancel_job(store, JOB, FakeGroups(), compute).terminated == ()  # nothing left: nothing asked
