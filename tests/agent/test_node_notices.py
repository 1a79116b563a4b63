"""A spot notice on a machine of a job of several that is not the host
(``runctl.agent.node_follower``, ``runctl.agent.multinode.stop_source``): the noticed member
asks every machine to stop its epoch and tells its group member; the host's stop source
reports the stop and moves the rendezvous to the next epoch; the noticed member posts its
final part to the host's final round and leaves once the host recorded the attempt's end
(or at the notice's deadline). On a folder store and on S3; no test sleeps for real."""

from __future__ import annotations

import pytest

from runctl.agent.multinode import stop_source
from runctl.agent.node_follower import NodeFollower, attempt_ended
from runctl.agent.rendezvous import read_rendezvous
from runctl.agent.status import StatusBook
from runctl.interruptions.job_stop import read_stop
from runctl.models import Attempt, InterruptionNotice, JobStatus
from runctl.store import layout
from runctl.store.sharded import ShardedRounds
from runctl.store.snapshots import Snapshots

from clocks import Clock
from test_multinode import JOB, _files, _two_members, spec


def notice(at: float, deadline: float | None) -> InterruptionNotice:
    return InterruptionNotice("spot", "terminate", at, deadline=deadline, detail="spot notice: terminate")


def test_attempt_ended_waits_for_the_hosts_record_of_the_attempt_running_at_the_notice():
    running, ended = Attempt(0, 1.0), Attempt(0, 1.0, ended=2.0, reason="interrupted")
    assert not attempt_ended([running], 0) and attempt_ended([ended], 0)
    assert attempt_ended([ended, Attempt(1, 3.0)], 0)  # the host started the next one already
    assert not attempt_ended([], 0) and not attempt_ended([], None)
    assert not attempt_ended([running], None) and attempt_ended([ended], None)


def test_a_notice_on_a_member_stops_every_machine_and_the_host_moves_the_epoch(any_store, tmp_path):
    host, member = _two_members(any_store, tmp_path)
    told = []
    follower = NodeFollower(member, spec(tmp_path), [], tmp_path / "run", on_notice=told.append)
    hosts, members = stop_source(host, interval=0.0), stop_source(member, interval=0.0)
    try:
        assert hosts.poll(1_000.0) is None and members.poll(1_000.0) is None  # no stop yet
        spot = notice(1_000.0, 1_120.0)
        follower._stop_every_machine(spot)
        assert told == [spot]  # the group member detaches the machine
        stop = read_stop(any_store, JOB)[0]
        assert (stop.epoch, stop.reason, stop.deadline, stop.requested) == (1, "spot notice on i-b", 1_120.0, 1_000.0)

        seen = hosts.poll(1_001.0)
        assert (seen.source, seen.deadline) == ("job-stop", 1_120.0)
        assert host.epoch == 2 and read_rendezvous(any_store, JOB)[0].epoch == 2  # at once, before the final round
        assert hosts.poll(1_002.0) is None  # the stop of epoch 1 stops nothing of epoch 2
        assert members.poll(1_001.0).source == "job-stop" and member.epoch == 1  # a member moves no epoch
        # The final round of epoch 1 still expects the noticed member.
        assert sorted(n.instance_id for n in host.running()) == ["i-a", "i-b"]
    finally:
        host.leave()
        member.leave()


def test_the_noticed_member_posts_its_final_part_and_leaves_once_the_host_recorded_the_attempt(
        any_store, tmp_path):
    host, member = _two_members(any_store, tmp_path)
    book = StatusBook(any_store, JobStatus(JOB, "running", (Attempt(0, 900.0),)))
    _files(tmp_path / "ckpt", {"step-000020/__1_0.distcp": b"rank1 at 20"})
    clock = Clock()
    polls = []

    def sleep(seconds: float) -> None:  # the host: its final round once the member's script ended
        clock.sleep(seconds)
        polls.append(clock.now)
        if len(polls) == 2:
            rnd = rounds.open_round(["i-a", "i-b"], fence=lambda: 1, timeout_s=60)
            rounds.post_part(rnd, "i-a", _files(tmp_path / "a", {"step-000020/__0_0.distcp": b"rank0 at 20"}))
        if len(polls) == 5:
            result = rounds.commit(rounds.current_round(), fence=lambda: 1)
            assert result.snapshot is not None
            book.update_attempt(ended=clock.now, reason="interrupted", final_snapshot=result.snapshot.seq)

    follower = NodeFollower(member, spec(tmp_path), [], tmp_path / "run", clock=clock, sleep=sleep)
    rounds = follower.rounds
    try:
        spot = notice(clock.now, clock.now + 120.0)
        follower._stop_every_machine(spot)
        follower._post_final_part(spot)
    finally:
        host.leave()
        member.leave()
    assert len(polls) == 5  # left at the first look after the host's record, not at the deadline
    final = Snapshots(any_store, layout.checkpoints_prefix(JOB)).latest()
    assert {f.path for f in final.files} == {"step-000020/__0_0.distcp", "step-000020/__1_0.distcp"}
    assert [p.instance for p in ShardedRounds(follower.snapshots).parts(final.seq)] == ["i-a", "i-b"]


def test_the_noticed_member_leaves_at_the_deadline_when_the_host_records_nothing(local_store, tmp_path):
    host, member = _two_members(local_store, tmp_path)
    StatusBook(local_store, JobStatus(JOB, "running", (Attempt(0, 900.0),))).heartbeat()
    clock = Clock()
    follower = NodeFollower(member, spec(tmp_path), [], tmp_path / "run", clock=clock, sleep=clock.sleep)
    try:
        spot = notice(clock.now, clock.now + 30.0)
        follower._stop_every_machine(spot)
        follower._post_final_part(spot)
    finally:
        host.leave()
        member.leave()
    assert 1_030.0 <= clock.now < 1_031.0


def test_after_a_stop_a_member_rejoins_the_hosts_next_epoch(any_store, tmp_path):
    host, member = _two_members(any_store, tmp_path)
    try:
        host.advance_epoch()
        again = member.rejoin(10.0)
        assert (again.is_host, again.record.epoch, member.epoch) == (False, 2, 2)
        assert again.record == host.rendezvous.record
    finally:
        host.leave()
        member.leave()


def test_after_a_stop_a_member_replaces_a_host_that_left(any_store, tmp_path):
    host, member = _two_members(any_store, tmp_path)
    try:
        host.going = True
        host.leave()  # its final round made, the host's agent leaves
        again = member.rejoin(10.0)
        assert (again.is_host, again.record.epoch, again.record.instance_id) == (True, 2, "i-b")
        assert read_rendezvous(any_store, JOB)[0] == again.record
    finally:
        member.leave()


def test_a_member_gives_up_when_the_host_neither_moves_nor_leaves(local_store, tmp_path):
    from runctl.errors import JobFailed

    host, member = _two_members(local_store, tmp_path)
    try:
        with pytest.raises(JobFailed, match="its host i-a neither moved past epoch 1 nor left within 5s"):
            member.rejoin(5.0)
    finally:
        host.leave()
        member.leave()


def test_a_host_that_goes_moves_no_epoch_at_its_own_stop(local_store, tmp_path):
    from runctl.interruptions.job_stop import request_stop

    host, member = _two_members(local_store, tmp_path)
    try:
        host.going = True
        request_stop(local_store, JOB, 1, "spot notice on i-a", 1_120.0, requested=0.0)
        assert stop_source(host, interval=0.0).poll(1_001.0).source == "job-stop"
        assert host.epoch == 1 and read_rendezvous(local_store, JOB)[0].epoch == 1  # a survivor moves it
    finally:
        host.leave()
        member.leave()


def test_the_hosts_spot_notice_asks_every_machine_to_stop_and_a_rebalance_does_not(local_store, tmp_path):
    from runctl.agent.node_epochs import stop_every_machine

    host, member = _two_members(local_store, tmp_path)
    try:
        stop_every_machine(local_store, host, {"source": "rebalance", "action": "rebalance", "received": 1.0})
        assert read_stop(local_store, JOB) is None and not host.going
        stop_every_machine(local_store, host, notice(1_000.0, 1_120.0).to_dict())
        assert host.going
        stop = read_stop(local_store, JOB)[0]
        assert (stop.epoch, stop.reason, stop.deadline, stop.requested) == (1, "spot notice on i-a", 1_120.0, 1_000.0)
        assert stop_source(member, interval=0.0).poll(1_001.0).source == "job-stop"
    finally:
        host.leave()
        member.leave()


def test_a_member_starts_its_script_without_the_interrupt_file_of_an_epoch_before(local_store, tmp_path, monkeypatch):
    # An epoch before may have used the same attempt number (the member reads the host's count
    # before or after the host adds its attempt): its stop must not stop the next epoch's script.
    import sys

    host, member = _two_members(local_store, tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "interrupt-0.json").write_text('{"source": "job-stop"}')  # the stop of the epoch before
    script = "import os,sys; sys.exit(3 if os.path.exists(os.environ['RUNCTL_INTERRUPT_FILE']) else 0)"
    monkeypatch.setattr(member, "launch", lambda command: [sys.executable, "-c", script])
    try:
        assert NodeFollower(member, spec(tmp_path), [], run_dir)._run_script() == 0
    finally:
        host.leave()
        member.leave()
