"""`runctl status JOB` of a job of several machines (``aws run --nodes N``): its rendezvous
host and epoch, its machines now, every stop of all of them, and the attempts the host
recorded. The records are written into a real store by the writers the agents use."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from click.testing import CliRunner

from runctl.agent.group_record import mark_ended, write_group
from runctl.agent.membership import Membership
from runctl.agent.multinode import MEMBERSHIP_TTL_S
from runctl.agent.rendezvous import advance_epoch, agree_on_host
from runctl.agent.status import StatusBook
from runctl.backends.aws.job_group import GroupRecord
from runctl.cli import cli
from runctl.cli._output import local_time
from runctl.interruptions.job_stop import request_stop
from runctl.jobs.submit import GroupRules
from runctl.models import Attempt, InterruptionNotice, JobStatus
from runctl.store.local import LocalStore
from runctl.store.s3 import S3Store
from runctl.testing.s3_proxy import Fault, FaultPlan, Rule, S3FaultProxy
from cli_output import one_line_error

JOB = "wide"
NOW = time.time()
NOTICE_AT = NOW - 600.0  # the member's spot notice, ten minutes ago


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "240")  # rich tables wide enough not to wrap
    return tmp_path


def status(*args: str):
    done = CliRunner().invoke(cli, ["status", *args], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.output


def two_node_job(store, *, members_left: bool = False) -> None:
    """A job of two machines after a spot notice on its member i-b: the host i-a committed
    the final round and moved the rendezvous to epoch 2; the group's replacement i-c joined."""
    write_group(store, JOB, {"group": GroupRecord("runctl-wide", "lt-1", "us-east-1", ("t3.micro",), (), True,
                                                  size=2).to_dict(),
                             "submitted": NOW - 3_600.0, **dataclasses.asdict(GroupRules())})
    # Heartbeats by the clock status reads: i-a and i-c renewed just now, i-b two TTLs ago.
    host = Membership(store, JOB, "i-a", "10.0.0.1", clock=lambda: time.time() - 2.0)
    noticed = Membership(store, JOB, "i-b", "10.0.0.2", clock=lambda: time.time() - 2 * MEMBERSHIP_TTL_S)
    held = agree_on_host(store, JOB, host.register(epoch=1), 29_400, now=NOW, ttl=MEMBERSHIP_TTL_S).record
    noticed.register(epoch=1)  # its agent stopped renewing once it posted its final part
    request_stop(store, JOB, 1, "spot notice on i-b", NOTICE_AT + 120.0, requested=NOTICE_AT)
    host.register(epoch=advance_epoch(store, JOB, held, 29_401).epoch)
    replacement = Membership(store, JOB, "i-c", "10.0.0.3", clock=lambda: time.time() - 1.0)
    replacement.register(epoch=2)
    stopped = InterruptionNotice("job-stop", "stop-job", NOTICE_AT + 1.0, NOTICE_AT + 120.0,
                                 "every machine of the job stops (epoch 1): spot notice on i-b")
    book = StatusBook(store, JobStatus(JOB, "running"), clock=lambda: NOW)
    book.add_attempt(Attempt(1, NOTICE_AT - 1_800.0, ended=NOTICE_AT + 30.0, reason="interrupted",
                             interruption=stopped.to_dict(), instance_id="i-a", final_snapshot=7))
    book.add_attempt(Attempt(2, NOTICE_AT + 75.0, resumed_from=7, instance_id="i-a"))
    if members_left:
        for membership in (host, noticed, replacement):
            membership.leave()
        book.update_attempt(ended=NOW - 5.0, reason="completed", exit_code=0)
        book.update(state="completed")
        mark_ended(store, JOB, "completed", "the script finished", by="i-a", clock=lambda: NOW - 4.0)


def test_a_running_job_of_two_machines_shows_its_host_machines_stop_and_attempts(here):
    store = LocalStore(here / "store")
    two_node_job(store)
    out = status(JOB, "--store", str(here / "store"))
    lines = out.splitlines()
    assert "  nodes: 2, rendezvous host i-a (epoch 2)" in lines, out
    cells = [line.replace("│", " ").split() for line in lines if line.startswith("│ i-")]
    rows = {row[0]: row[1:] for row in cells}
    assert rows["i-a"][:3] == ["10.0.0.1", "2", "host"] and rows["i-a"][4:] == ["ago"], out
    assert rows["i-b"][:3] == ["10.0.0.2", "1", "member"] and rows["i-b"][4:] == ["ago", "(stale)"], out
    assert rows["i-c"][:3] == ["10.0.0.3", "2", "member"] and rows["i-c"][4:] == ["ago"], out
    ages = {instance: int(row[3].removesuffix("s")) for instance, row in rows.items()}
    assert 1 <= ages["i-c"] < ages["i-b"] and 2 * MEMBERSHIP_TTL_S <= ages["i-b"] < 2 * MEMBERSHIP_TTL_S + 20, out
    assert f"  stop of epoch 1 at {local_time(NOTICE_AT)}: spot notice on i-b" in lines, out
    # The host's first attempt ended by the stop: 45 s from its end to the next one's start.
    assert "attempts: 2, recoveries: 1, time lost: 45.0s" in out, out


def test_the_json_report_has_the_same_under_nodes_rendezvous_machines_and_stops(here):
    store = LocalStore(here / "store")
    two_node_job(store)
    report = json.loads(status(JOB, "--store", str(here / "store"), "--output", "json"))
    assert report["nodes"] == 2
    assert report["rendezvous"] == {"instance_id": "i-a", "address": "10.0.0.1", "port": 29_401, "epoch": 2}
    assert [(m["instance_id"], m["role"], m["epoch"], m["stale"]) for m in report["machines"]] == [
        ("i-a", "host", 2, False), ("i-b", "member", 1, True), ("i-c", "member", 2, False)]
    assert report["stops"] == [{"epoch": 1, "reason": "spot notice on i-b", "deadline": NOTICE_AT + 120.0,
                                "requested": NOTICE_AT}]
    assert [a["reason"] for a in report["attempts"]] == ["interrupted", None]


def test_a_finished_job_says_no_machine_is_left_instead_of_an_empty_table(here):
    store = LocalStore(here / "store")
    two_node_job(store, members_left=True)
    out = status(JOB, "--store", str(here / "store"))
    lines = out.splitlines()
    assert lines[0] == f"job {JOB}: completed", out
    assert "  machines: none in the job now" in lines and "┃ instance" not in out, out
    assert "  nodes: 2, rendezvous host i-a (epoch 2)" in lines, out
    assert f"  stop of epoch 1 at {local_time(NOTICE_AT)}: spot notice on i-b" in lines, out
    assert json.loads(status(JOB, "--store", str(here / "store"), "--output", "json"))["machines"] == []


def test_a_job_whose_machines_have_not_joined_yet_says_so(here):
    store = LocalStore(here / "store")
    write_group(store, JOB, {"group": GroupRecord("runctl-wide", "lt-1", "us-east-1", ("t3.micro",), (), True,
                                                  size=3).to_dict(), **dataclasses.asdict(GroupRules())})
    StatusBook(store, JobStatus(JOB, "pending"), clock=lambda: NOW).heartbeat()
    lines = status(JOB, "--store", str(here / "store")).splitlines()
    assert "  nodes: 3, no rendezvous host yet" in lines and "  machines: none in the job now" in lines, lines
    assert not any("stop of epoch" in line for line in lines), lines
    report = json.loads(status(JOB, "--store", str(here / "store"), "--output", "json"))
    assert (report["nodes"], report["rendezvous"], report["machines"], report["stops"]) == (3, None, [], [])


def test_a_job_of_one_machine_shows_no_nodes(here):
    store = LocalStore(here / "store")
    write_group(store, "narrow", {"group": GroupRecord("runctl-narrow", "lt-1", "us-east-1", ("t3.micro",), (),
                                                       True).to_dict(), **dataclasses.asdict(GroupRules())})
    StatusBook(store, JobStatus("narrow", "running"), clock=lambda: NOW).heartbeat()
    assert "nodes" not in status("narrow", "--store", str(here / "store"))
    assert "nodes" not in json.loads(status("narrow", "--store", str(here / "store"), "--output", "json"))


def test_a_store_that_does_not_answer_the_listing_of_the_machines_is_one_line(moto_server, s3_bucket, runctl_cli,
                                                                                cli_env):
    two_node_job(S3Store(s3_bucket, "runctl"))
    fails = Rule(Fault("reset_before"), method="GET", path=r"prefix=.*nodes", times=100)
    with S3FaultProxy(moto_server, FaultPlan([fails])) as proxy:
        done = runctl_cli("status", JOB, "--store", f"s3://{s3_bucket}/runctl",
                          env={**cli_env, "AWS_ENDPOINT_URL": proxy.endpoint})
    assert proxy.faults, "the listing of the machines was never asked"
    error = one_line_error(done, code=3)
    assert error.startswith("runctl: error: connection to S3 failed while trying to list "
                            f"s3://{s3_bucket}/runctl/jobs/{JOB}/nodes/"), error
