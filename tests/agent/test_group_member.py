"""The agent of a job's group instance and its boot watchdog, against ``FakeGroups`` and a
local store: who runs the job, who leaves the group at a notice, who ends the group, and
how failures are counted. No server: each test takes milliseconds."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from runctl.agent import group_record as records
from runctl.agent.boot_watchdog import check_boot
from runctl.agent.cancellation import mark_cancelled
from runctl.agent.group_member import Action, GroupMember, before_run
from runctl.agent.node_follower import LEFT
from runctl.agent.identity import InstanceIdentity
from runctl.agent.status import read_status
from runctl.backends.aws.launch import LaunchSpec
from runctl.errors import StoreError, UsageError
from runctl.models import Attempt, JobSpec, JobStatus
from runctl.store import layout
from runctl.store.local import LocalStore
from runctl.testing import FakeGroups

JOB = "job-1"
NOTICE = {"source": "spot", "action": "terminate", "received": 100.0, "deadline": 220.0, "restartable": True}


@dataclasses.dataclass
class Event:
    kind: str
    message: str = ""
    data: dict = dataclasses.field(default_factory=dict)


class ScriptedResident:
    """Stands in for ResidentAgent.run_job: emits ``events``, writes the job's status, returns
    ``state`` (or raises ``error``)."""

    def __init__(self, store, instance_id: str, state: str = "completed", events=(), error=None) -> None:
        self.store = store
        self.identity = InstanceIdentity(instance_id, "fake-region", "t3.micro", "fake-az")
        self.state, self.events, self.error = state, list(events), error
        self.on_event = lambda event: None
        self.ran = False

    def run_job(self, job_id: str) -> str:
        self.ran = True
        for event in self.events:
            self.on_event(event)
        if self.error is not None:
            raise self.error
        attempt = Attempt(0, 50.0, ended=60.0, reason=self.state, instance_id=self.identity.instance_id)
        status = JobStatus(job_id, self.state, (attempt,), message=f"the script {self.state}")
        self.store.write(layout.status_key(job_id), json.dumps(status.to_dict()).encode())
        return self.state


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


@pytest.fixture
def groups(store):
    fake = FakeGroups()
    spec = LaunchSpec(image_id="ami-1", instance_types=("t3.micro",), job=JOB)
    fake.create(spec, "runctl-job-1", (), on_template=lambda record: records.write_group(
        store, JOB, {"group": record.to_dict(), "submitted": 0.0, "auto_resume": True, "max_restarts": 2,
                     "max_boot_failures": 2, "boot_timeout_s": 900.0}))
    return fake


class RecordingMachine:
    """Stands in for agent.power.Machine: records what it was asked."""

    def __init__(self, powered: list[str]) -> None:
        self.powered = powered
        self.fallback_cancelled = False

    def power_off(self, why: str) -> bool:
        self.powered.append(why)
        return True

    def cancel_fallback_shutdown(self) -> None:
        self.fallback_cancelled = True


def member(store, groups, resident, powered):
    return GroupMember(resident, JOB, groups, machine=RecordingMachine(powered), clock=lambda: 123.0)


def test_the_job_completed_the_agent_leaves_and_deletes_the_group_and_ends_its_machine(store, groups):
    (first,) = groups.groups["runctl-job-1"].members
    powered: list[str] = []
    member(store, groups, ScriptedResident(store, first, "completed", [Event("attempt")]), powered).serve()
    assert groups.calls[-1] == ("end", "runctl-job-1", first)
    assert groups.groups["runctl-job-1"].ended and groups.terminated == []  # it left before the deletion
    ended = records.read_group(store, JOB)["ended"]
    assert (ended["state"], ended["by"]) == ("completed", first)
    assert powered == [f"job {JOB} completed"]


def test_at_a_spot_notice_the_agent_leaves_the_group_keeping_its_capacity(store, groups):
    group = groups.groups["runctl-job-1"]
    (first,) = group.members
    powered: list[str] = []
    resident = ScriptedResident(store, first, "interrupted", [Event("attempt"), Event("notice", data={"notice": NOTICE})])
    member(store, groups, resident, powered).serve()
    assert [c for c in groups.calls if c[0] == "detach"] == [("detach", "runctl-job-1", first)]
    assert first not in group.members and len(group.members) == 1  # the replacement, launched at once
    assert not group.ended
    (record,) = records.read_recovery_list(store, JOB)
    assert record["old_instance"] == first and record["notice_seen"] == 100.0 and record["launch_requested"] == 123.0
    assert powered == [f"job {JOB} moved to the group's next instance"]

    # The replacement's agent completes the record and runs the job.
    (second,) = group.members
    member(store, groups, ScriptedResident(store, second, "completed"), []).serve()
    (record,) = records.read_recovery_list(store, JOB)
    assert (record["launched"], record["az"], record["instance_type"]) == (second, "fake-az", "t3.micro")


def test_a_rebalance_hint_or_a_users_stop_does_not_leave_the_group(store, groups):
    (first,) = groups.groups["runctl-job-1"].members
    hint = {**NOTICE, "source": "rebalance", "action": "rebalance"}
    stop = {**NOTICE, "source": "user", "action": "stop-job", "restartable": False}
    resident = ScriptedResident(store, first, "stopped", [Event("notice", data={"notice": hint}),
                                                          Event("notice", data={"notice": stop})])
    member(store, groups, resident, []).serve()
    assert [c for c in groups.calls if c[0] == "detach"] == []
    assert records.read_group(store, JOB)["ended"]["state"] == "stopped"


def test_a_machine_lost_without_a_notice_is_recorded_by_its_replacement(store, groups):
    group = groups.groups["runctl-job-1"]
    (first,) = group.members
    running = JobStatus(JOB, "running", (Attempt(0, 50.0, instance_id=first),))
    store.write(layout.status_key(JOB), json.dumps(running.to_dict()).encode())
    groups.lose("runctl-job-1", first)
    (second,) = group.members
    member(store, groups, ScriptedResident(store, second, "completed"), []).serve()
    (record,) = records.read_recovery_list(store, JOB)
    assert (record["reason"], record["old_instance"], record["launched"]) == ("lost without a notice", first, second)


def test_a_cancelled_job_is_not_started_by_a_replacement(store, groups):
    (first,) = groups.groups["runctl-job-1"].members
    mark_cancelled(store, JOB)
    resident = ScriptedResident(store, first)
    powered: list[str] = []
    member(store, groups, resident, powered).serve()
    assert not resident.ran
    assert records.read_group(store, JOB)["ended"]["state"] == "stopped" and powered


def test_an_agent_that_cannot_start_the_job_counts_until_the_job_fails(store, groups):
    group = groups.groups["runctl-job-1"]
    for n in range(2):  # max_boot_failures = 2
        (instance,) = group.members
        powered: list[str] = []
        member(store, groups, ScriptedResident(store, instance, error=StoreError("the store is down")), powered).serve()
        assert len(powered) == 1
        if n == 0:  # the machine goes; the group tries another (FakeGroups: replace it as AWS would)
            groups.lose("runctl-job-1", instance)
    assert group.ended
    status = read_status(store, JOB)
    assert status.state == "failed" and "2 instances in a row could not start it" in status.message
    assert "the store is down" in status.message


class ResidentWithAForeignFolder(ScriptedResident):
    """Runs the job with the real Agent, in a checkpoint folder holding a file runctl did not
    write: the agent records the job failed in status.json and raises the UsageError."""

    def __init__(self, store, instance_id: str, tmp_path) -> None:
        super().__init__(store, instance_id)
        self.folder, self.run_dir = tmp_path / "ck", tmp_path / "run"
        self.folder.mkdir()
        (self.folder / "notes.txt").write_text("not runctl's")

    def run_job(self, job_id: str) -> str:
        from runctl.agent.supervisor import Agent, AgentOptions

        self.ran = True
        spec = JobSpec(job_id, ("true",), self.store.url, str(self.folder), str(self.run_dir.parent))
        return Agent(spec, self.store, [], AgentOptions(run_dir=self.run_dir)).run().state


def test_an_agent_stopped_by_bad_input_ends_the_job_at_once_saying_what_to_fix(store, groups, tmp_path):
    """The next instance would stop the same way: the job ends here, with the agent's message
    (what is wrong, fix it first; not a plain "run it again"); no boot failure is counted
    and no machine is replaced."""
    group = groups.groups["runctl-job-1"]
    (first,) = group.members
    powered: list[str] = []
    resident = ResidentWithAForeignFolder(store, first, tmp_path)
    member(store, groups, resident, powered).serve()
    assert resident.ran and group.ended
    status = read_status(store, JOB)
    ended = records.read_group(store, JOB)["ended"]
    assert status.state == ended["state"] == "failed" and ended["message"] == status.message
    assert status.message.startswith(f"the agent stopped: checkpoint folder {resident.folder} holds 1 file(s) "
                                     "runctl did not write") and "notes.txt" in status.message
    assert "fix that first" in status.message and "run the same command again" not in status.message
    assert records.boot_failures(store, JOB) == []
    assert not any(a.reason in ("lost", None) for a in status.attempts)
    assert powered == [f"job {JOB} failed"]


def test_bad_input_before_the_agent_ran_the_job_still_counts_as_a_boot_failure(store, groups):
    """A UsageError the job's agent did not end the job on (here: another agent held its
    lease too long) may pass on another instance: counted, the group goes on."""
    group = groups.groups["runctl-job-1"]
    (first,) = group.members
    powered: list[str] = []
    busy = UsageError(f"job {JOB} is already running (agent elsewhere); wait for it (waited 21600s for it)")
    member(store, groups, ScriptedResident(store, first, error=busy), powered).serve()
    assert not group.ended and records.boot_failures(store, JOB) == [first]
    assert len(powered) == 1 and "could not start here" in powered[0]


def test_the_boot_failures_are_cleared_once_a_script_ran(store, groups):
    records.add_boot_failure(store, JOB, "i-earlier")
    (first,) = groups.groups["runctl-job-1"].members
    member(store, groups, ScriptedResident(store, first, "completed", [Event("attempt")]), []).serve()
    assert records.boot_failures(store, JOB) == []


@pytest.mark.parametrize(("status", "cancel", "settings", "expected"), [
    (None, None, {}, Action(True)),
    (None, {"by": "alice"}, {}, Action(False, "stopped", "cancelled (alice)")),
    (JobStatus(JOB, "completed", message="done"), None, {}, Action(False, "completed", "done")),
    # Reclaimed, and no auto-resume: the job ends interrupted.
    (JobStatus(JOB, "interrupted", (Attempt(0, 1.0, reason="interrupted"),)), None, {"auto_resume": False},
     Action(False, "interrupted", "its instance was reclaimed and auto-resume is off; resume it with runctl aws run "
                                  f"... --job-id {JOB} --auto-resume")),
    # Three machines lost (the last still "running" in status.json), max_restarts 2: given up.
    (JobStatus(JOB, "running", (Attempt(0, 1.0, reason="interrupted"), Attempt(1, 2.0, reason="lost"),
                                Attempt(2, 3.0))), None, {"max_restarts": 2},
     Action(False, "failed", f"gave up after 3 lost or reclaimed instances (max_restarts 2); resume it with runctl aws "
                             f"run ... --job-id {JOB}")),
    # Losses before this submission do not count.
    (JobStatus(JOB, "pending", (Attempt(0, 1.0, reason="interrupted"), Attempt(1, 2.0, reason="lost"),
                                Attempt(2, 3.0, reason="lost"))), None, {"max_restarts": 2, "submitted": 5.0},
     Action(True)),
    # A machine of a job of two joins while the host's attempt runs: no reclaim, no loss.
    (JobStatus(JOB, "running", (Attempt(0, 1.0),)), None, {"group": {"size": 2}, "auto_resume": False},
     Action(True)),
    (JobStatus(JOB, "running", (Attempt(0, 1.0, reason="interrupted"), Attempt(1, 2.0))), None,
     {"group": {"size": 2}, "max_restarts": 1}, Action(True)),
    # ... but the attempts the host recorded stopped still count.
    (JobStatus(JOB, "running", (Attempt(0, 1.0, reason="interrupted"), Attempt(1, 2.0, reason="lost"),
                                Attempt(2, 3.0))), None, {"group": {"size": 2}, "max_restarts": 1},
     Action(False, "failed", f"gave up after 2 lost or reclaimed instances (max_restarts 1); resume it with runctl aws "
                             f"run ... --job-id {JOB}")),
])
def test_before_run(status, cancel, settings, expected):
    assert before_run(status, cancel, settings) == expected


def test_the_boot_watchdog_does_nothing_when_the_agent_started(store, groups):
    (first,) = groups.groups["runctl-job-1"].members
    store.write(layout.instance_agent_key(first), b"{}")
    powered: list[str] = []
    assert check_boot(store, JOB, first, groups, machine=RecordingMachine(powered)) == "started"
    assert powered == [] and records.boot_failures(store, JOB) == []


def test_the_boot_watchdog_counts_and_fails_the_job_at_the_limit(store, groups):
    group = groups.groups["runctl-job-1"]
    powered: list[str] = []
    (first,) = group.members
    assert check_boot(store, JOB, first, groups, machine=RecordingMachine(powered)) == "counted"
    groups.lose("runctl-job-1", first)
    (second,) = group.members
    assert check_boot(store, JOB, second, groups, machine=RecordingMachine(powered)) == "failed"
    assert len(powered) == 2 and group.ended
    status = read_status(store, JOB)
    assert status.state == "failed" and "did not start within 900s on 2 instances in a row" in status.message
    assert records.read_group(store, JOB)["ended"]["by"] == f"boot watchdog on {second}"


def test_an_agent_never_shuts_down_a_machine_the_metadata_service_did_not_confirm(monkeypatch):
    import subprocess

    from runctl.agent.power import Machine

    ran = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    machine = Machine("i-0123456789abcdef0", confirmed=False)
    assert machine.power_off("the job ended") is False
    machine.cancel_fallback_shutdown()
    assert ran == []


def test_an_agent_that_crashes_still_counts_and_ends_its_machine(store, groups):
    (first,) = groups.groups["runctl-job-1"].members
    powered: list[str] = []
    member(store, groups, ScriptedResident(store, first, error=ModuleNotFoundError("No module named 'x'")),
           powered).serve()
    assert records.boot_failures(store, JOB) == [first]
    assert len(powered) == 1 and "No module named 'x'" in powered[0]


def test_giving_up_after_max_restarts_fails_the_job_in_its_status_too(store, groups):
    (instance,) = groups.groups["runctl-job-1"].members
    lost = JobStatus(JOB, "running", tuple(Attempt(n, float(n), reason="lost", instance_id=f"i-{n}") for n in range(3)))
    write = json.dumps(lost.to_dict()).encode()
    store.write(layout.status_key(JOB), write)
    resident = ScriptedResident(store, instance)
    member(store, groups, resident, []).serve()
    assert not resident.ran
    status = read_status(store, JOB)
    assert status.state == "failed" and status.message.startswith("gave up after 3 lost or reclaimed instances")
    assert records.read_group(store, JOB)["ended"]["state"] == "failed"


@pytest.mark.parametrize("host_ends_it", [True, False])
def test_a_member_whose_part_is_over_powers_off_once_the_host_deleted_the_group(store, groups, host_ends_it, caplog):
    """Powered off before, its machine would be replaced by the group, for nothing."""
    from runctl.agent.group_member import GROUP_END_WAIT_S

    (first,) = groups.groups["runctl-job-1"].members
    powered: list[str] = []
    now = [123.0]

    def sleep(seconds: float) -> None:
        assert not powered, "powered off before the group ended"
        now[0] += seconds
        if host_ends_it and now[0] >= 130.0:
            records.mark_ended(store, JOB, "completed", "done", by="i-host")

    agent = GroupMember(ScriptedResident(store, first, LEFT), JOB, groups, machine=RecordingMachine(powered),
                        clock=lambda: now[0], sleep=sleep)
    with caplog.at_level(logging.WARNING, logger="runctl.agent.group_member"):
        agent.serve()
    assert powered == [f"job {JOB}: this machine's part is over"]
    assert now[0] == (130.0 if host_ends_it else 123.0 + GROUP_END_WAIT_S)
    assert any("not deleted within" in r.getMessage() for r in caplog.records) is not host_ends_it
