"""A machine of a job of several lost WITHOUT a spot notice (its membership expires):
every machine's stop source asks the stop of the epoch once; a round needs every machine
live and is abandoned at once when an expected one is gone; a member waiting for a lost
host stops waiting and replaces it; a torchrun that failed is a stop when the stop comes
within the TTL, else the failure it was. On a folder store and on S3; clocks and sleeps are
passed in, no test sleeps for real."""

from __future__ import annotations

import contextlib
import sys
from datetime import datetime, timezone

import pytest

from runctl.agent.multinode import LOSS_MARGIN_S, MEMBERSHIP_TTL_S, Node, RoundCommitter, membership_ttl, stop_source
from runctl.agent.node_follower import HOST_CHECK_S, LEFT, REJOIN, NodeFollower
from runctl.agent.rendezvous import read_rendezvous
from runctl.agent.status import StatusBook
from runctl.errors import StoreError, UsageError
from runctl.interruptions.job_stop import read_stop, request_stop
from runctl.models import Attempt, JobStatus
from runctl.store import layout
from runctl.store.sharded import ShardedRounds
from runctl.store.snapshots import Snapshots

from clocks import Clock
from test_multinode import JOB, _files, spec

TTL = 30.0


class FailingNode(Node):
    """A real Node whose torchrun is a script that fails at once (no torch needed)."""

    def launch(self, command):
        self.wait_for_all()
        return [sys.executable, "-c", "import sys; sys.exit(1)"]


@contextlib.contextmanager
def _gathered(store, tmp_path, clock: Clock, cls=Node):
    """Two machines of a job, gathered at epoch 1 (host i-a, member i-b); both leave after."""
    host, member = (cls(store, spec(tmp_path), instance, address, heartbeat_interval=3600.0, ttl=TTL, clock=clock,
                        sleep=clock.sleep, gather_timeout=5.0)
                    for instance, address in (("i-a", "127.0.0.2"), ("i-b", "127.0.0.3")))
    host.join()
    member.join()
    try:
        host.wait_for_all()
        member.wait_for_all()
        yield host, member
    finally:
        host.leave()
        member.leave()


def _age(clock: Clock, seconds: float, *renewed: Node) -> None:
    """Time passes; only the ``renewed`` machines renew their membership."""
    clock.now += seconds
    for machine in renewed:
        machine.membership.register(machine.epoch)


def test_a_member_lost_without_a_notice_makes_the_host_ask_the_stop_once(any_store, tmp_path):
    clock = Clock()
    with _gathered(any_store, tmp_path, clock) as (host, member):
        source = stop_source(host, interval=0.0)
        _age(clock, TTL - 1.0, host)
        assert source.poll(clock.now) is None and read_stop(any_store, JOB) is None  # within the TTL: live
        _age(clock, 2.0, host)
        assert source.poll(clock.now) is None  # asked now, seen at the next look
        stop = read_stop(any_store, JOB)[0]
        assert (stop.epoch, stop.deadline) == (1, None)
        assert stop.reason == "i-b lost without a notice (membership not renewed for 30s)"
        _age(clock, 3.0, host)
        seen = source.poll(clock.now)
        assert seen.source == "job-stop" and "i-b lost without a notice" in seen.detail
        assert host.epoch == 2 and read_rendezvous(any_store, JOB)[0].epoch == 2  # the next gather: a replacement
        _age(clock, 3.0, host)
        etag = read_stop(any_store, JOB)[1]
        assert source.poll(clock.now) is None and read_stop(any_store, JOB)[1] == etag  # once


def test_a_member_sees_its_host_lost_and_asks_the_stop_of_its_epoch(local_store, tmp_path):
    clock = Clock()
    with _gathered(local_store, tmp_path, clock) as (host, member):
        source = stop_source(member, interval=0.0)
        _age(clock, TTL + 1.0, member)
        assert source.poll(clock.now) is None
        assert read_stop(local_store, JOB)[0].reason.startswith("i-a lost without a notice")
        _age(clock, 3.0, member)
        assert source.poll(clock.now).source == "job-stop" and member.epoch == 1  # a member moves no epoch


def test_a_machine_gone_after_the_jobs_end_or_after_a_stop_is_no_loss(local_store, tmp_path):
    clock = Clock()
    with _gathered(local_store, tmp_path, clock) as (host, member):
        ended = Attempt(0, 900.0, ended=950.0, reason="completed")
        book = StatusBook(local_store, JobStatus(JOB, "completed", (ended,)))
        book.heartbeat()
        source = stop_source(member, interval=0.0)
        _age(clock, TTL + 1.0, member)
        assert source.poll(clock.now) is None and read_stop(local_store, JOB) is None  # the host left at the end

        book.update(state="running")
        request_stop(local_store, JOB, 1, "spot notice on i-a", None, requested=None)
        assert source.poll(clock.now).source == "job-stop"
        _age(clock, 3.0, member)
        assert source.poll(clock.now) is None  # it left after the stop: nothing more asked
        assert read_stop(local_store, JOB)[0].reason == "spot notice on i-a"


def test_no_round_opens_while_a_machine_of_the_epoch_is_not_live(any_store, tmp_path):
    clock = Clock()
    with _gathered(any_store, tmp_path, clock) as (host, member):
        rounds = ShardedRounds(Snapshots(any_store, layout.checkpoints_prefix(JOB)))
        mine = _files(tmp_path / "a", {"step-000010/__0_0.distcp": b"rank0"})
        _age(clock, TTL + 1.0, host)
        with pytest.raises(StoreError) as info:
            RoundCommitter(rounds, host)(mine, files=[], carry=[], metadata={}, fence=lambda: 1)
    assert str(info.value) == ("no round: only 1 of the job's 2 machines of epoch 1 are live (i-a); a snapshot "
                               "needs every rank's part")
    assert rounds.current_round() is None and rounds.snapshots.latest() is None  # the previous one stays


def test_an_open_round_is_abandoned_at_once_when_a_machine_it_expects_is_lost(any_store, tmp_path):
    clock = Clock()
    with _gathered(any_store, tmp_path, clock) as (host, member):
        rounds = ShardedRounds(Snapshots(any_store, layout.checkpoints_prefix(JOB)))
        mine = _files(tmp_path / "a", {"step-000010/__0_0.distcp": b"rank0"})
        waited = []

        def sleep(seconds: float) -> None:  # the member is lost while the host waits for its part
            waited.append(seconds)
            _age(clock, TTL + 1.0, host)

        with pytest.raises(StoreError) as info:
            RoundCommitter(rounds, host, timeout_s=300.0, sleep=sleep)(mine, files=[], carry=[], metadata={},
                                                                       fence=lambda: 1)
    assert str(info.value) == "round 1 abandoned: i-b is no longer live"
    assert len(waited) == 1  # at the first look after the loss, not at the round's 5-minute deadline
    assert rounds.current_round().state == "abandoned" and rounds.snapshots.latest() is None


def test_the_final_round_ends_at_the_notices_deadline_not_its_own_timeout(any_store, tmp_path):
    clock = Clock()
    with _gathered(any_store, tmp_path, clock) as (host, member):
        rounds = ShardedRounds(Snapshots(any_store, layout.checkpoints_prefix(JOB)),
                               clock=lambda: datetime.fromtimestamp(clock.now, timezone.utc))
        mine = _files(tmp_path / "a", {"step-000010/__0_0.distcp": b"rank0"})

        def sleep(seconds: float) -> None:  # the member stays live but never posts its part
            _age(clock, seconds, host, member)

        committer = RoundCommitter(rounds, host, timeout_s=300.0, clock=clock, sleep=sleep)
        committer.final_by(clock.now + 20.0)
        with pytest.raises(StoreError) as info:
            committer(mine, files=[], carry=[], metadata={}, fence=lambda: 1)
    assert str(info.value) == "round 1 abandoned: no part from i-b within 20s (the notice's deadline)"
    assert 1_020.0 <= clock.now <= 1_021.0  # not the round's own 5 minutes
    assert rounds.current_round().state == "abandoned" and rounds.snapshots.latest() is None


def test_a_member_waiting_for_a_lost_host_stops_waiting_and_replaces_it(any_store, tmp_path):
    clock = Clock()
    with _gathered(any_store, tmp_path, clock) as (host, member):

        def sleep(seconds: float) -> None:
            _age(clock, seconds, member)

        follower = NodeFollower(member, spec(tmp_path), [], tmp_path / "run", end_wait=900.0, clock=clock, sleep=sleep)
        follower._post_until_the_end()
        assert follower._host_lost
        assert 1_000.0 + TTL <= clock.now < 1_000.0 + TTL + HOST_CHECK_S + 1.0  # not the 900 s of end_wait
        again = member.rejoin(10.0)
        assert (again.is_host, again.record.instance_id, again.record.epoch) == (True, "i-b", 2)


def test_a_member_keeps_waiting_while_its_host_is_live(local_store, tmp_path):
    clock = Clock()
    with _gathered(local_store, tmp_path, clock) as (host, member):

        def sleep(seconds: float) -> None:
            _age(clock, seconds, host, member)

        follower = NodeFollower(member, spec(tmp_path), [], tmp_path / "run", end_wait=45.0, clock=clock, sleep=sleep)
        follower._post_until_the_end()
    assert not follower._host_lost and clock.now >= 1_045.0  # past the TTL: the renewals count


def test_a_failed_torchrun_followed_by_a_stop_is_a_stop_and_the_member_rejoins(local_store, tmp_path):
    clock = Clock()
    with _gathered(local_store, tmp_path, clock, cls=FailingNode) as (host, member):
        StatusBook(local_store, JobStatus(JOB, "running", (Attempt(0, 900.0, ended=1_001.0, reason="interrupted"),)))\
            .heartbeat()
        sleeps = []

        def sleep(seconds: float) -> None:  # another machine asks the stop a moment after the failure
            sleeps.append(seconds)
            _age(clock, seconds, host, member)
            if len(sleeps) == 4:
                request_stop(local_store, JOB, 1, "i-c lost without a notice", None, requested=None)

        member._sleep = sleep
        follower = NodeFollower(member, spec(tmp_path), [stop_source(member, interval=0.0)], tmp_path / "run",
                                clock=clock, sleep=sleep)
        outcome = follower.run()
    assert outcome == REJOIN
    assert follower._stopped.source == "job-stop" and "i-c lost without a notice" in follower._stopped.detail
    assert clock.now < 1_000.0 + TTL  # judged at the stop, not after the TTL


def test_a_torchrun_failed_on_every_machine_is_the_scripts_failure_at_once(any_store, tmp_path):
    clock = Clock()
    with _gathered(any_store, tmp_path, clock, cls=FailingNode) as (host, member):
        StatusBook(any_store, JobStatus(JOB, "failed", (Attempt(0, 900.0, ended=1_001.0, reason="failed"),)))\
            .heartbeat()

        def sleep(seconds: float) -> None:  # the host's torchrun failed too, a moment later
            _age(clock, seconds, host, member)
            host.await_stop([])

        member._sleep = sleep
        follower = NodeFollower(member, spec(tmp_path), [stop_source(member, interval=0.0)], tmp_path / "run",
                                clock=clock, sleep=sleep)
        outcome = follower.run()
    assert outcome == LEFT and follower._stopped is None and read_stop(any_store, JOB) is None
    assert clock.now < 1_000.0 + 5.0  # not the TTL + margin that a lost machine takes


def test_a_failed_torchrun_without_a_stop_is_the_failure_it_was(local_store, tmp_path):
    clock = Clock()
    with _gathered(local_store, tmp_path, clock, cls=FailingNode) as (host, member):
        StatusBook(local_store, JobStatus(JOB, "failed", (Attempt(0, 900.0, ended=1_001.0, reason="failed"),)))\
            .heartbeat()

        def sleep(seconds: float) -> None:  # the host stays live, its torchrun not known to have failed
            _age(clock, seconds, host, member)

        member._sleep = sleep
        follower = NodeFollower(member, spec(tmp_path), [stop_source(member, interval=0.0)], tmp_path / "run",
                                clock=clock, sleep=sleep)
        outcome = follower.run()
    assert outcome == LEFT and follower._stopped is None and read_stop(local_store, JOB) is None
    assert clock.now >= 1_000.0 + TTL + LOSS_MARGIN_S  # it waited for a stop that never came


def test_the_membership_ttl_setting_is_a_positive_number_of_seconds():
    assert membership_ttl(None) == membership_ttl(" ") == MEMBERSHIP_TTL_S
    assert membership_ttl("10") == 10.0
    for bad in ("0", "-3", "soon", "nan"):
        with pytest.raises(UsageError, match="RUNCTL_MEMBERSHIP_TTL=.* is not a positive number of seconds"):
            membership_ttl(bad)


class InterruptCheckingNode(Node):
    """A real Node whose torchrun fails only when it finds its interrupt file at its start."""

    def launch(self, command):
        self.wait_for_all()
        return [sys.executable, "-c",
                "import os, sys; sys.exit(3 if os.path.exists(os.environ['RUNCTL_INTERRUPT_FILE']) else 0)"]


def test_a_members_script_never_starts_with_the_interrupt_file_of_an_epoch_it_stopped(local_store, tmp_path):
    clock = Clock()
    with _gathered(local_store, tmp_path, clock, cls=InterruptCheckingNode) as (host, member):
        StatusBook(local_store, JobStatus(JOB, "completed", (Attempt(0, 900.0, ended=1_001.0, reason="interrupted"),)))\
            .heartbeat()
        stale = tmp_path / "run" / "interrupt-1.json"  # the stop of the epoch before, when attempt 1 was not added yet
        stale.parent.mkdir(parents=True)
        stale.write_text("{}")

        def sleep(seconds: float) -> None:
            _age(clock, seconds, host, member)

        member._sleep = sleep
        follower = NodeFollower(member, spec(tmp_path), [stop_source(member, interval=0.0)], tmp_path / "run",
                                clock=clock, sleep=sleep)
        assert follower.run() == LEFT
    assert clock.now < 1_000.0 + TTL  # the script exited 0: no wait for a stop after a failure
