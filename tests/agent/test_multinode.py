"""runctl.agent.multinode and node_follower: the machines of a job of several nodes join,
agree on one host, start torchrun only once all of them are live (failing clearly when they
do not come), and make sharded snapshots: the host's round commits once every machine's
part is there, and is abandoned when one never comes. On a folder store and on S3; clocks
and sleeps are passed in, no test sleeps for real."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from runctl.agent.membership import NodeRecord
from runctl.agent.multinode import Node, RoundCommitter, all_present
from runctl.agent.node_follower import CATCH_UP_S, NodeFollower, behind
from runctl.errors import JobFailed, StoreError, UsageError
from runctl.models import JobSpec
from runctl.store import layout
from runctl.store.rounds import Part
from runctl.store.sharded import ShardedRounds
from runctl.store.snapshots import Snapshots
from clocks import Clock

JOB = "job-1"


def spec(tmp_path, nodes: int = 2) -> JobSpec:
    return JobSpec(JOB, ("python", "train.py", "--steps", "5"), "store", checkpoint_dir=str(tmp_path / "ckpt"),
                   workdir=str(tmp_path), nodes=nodes, nproc_per_node="1", grace_period=30.0)


def node(store, tmp_path, instance: str, address: str, clock: Clock, **options) -> Node:
    return Node(store, spec(tmp_path), instance, address, heartbeat_interval=3600.0, clock=clock,
                sleep=clock.sleep, **options)


def test_all_present_counts_distinct_machines():
    a, b = NodeRecord("i-a", "10.0.0.1", 1.0, 1), NodeRecord("i-b", "10.0.0.2", 1.0, 1)
    assert all_present([a, b], 2) and all_present([a, b], 1)
    assert not all_present([a], 2) and not all_present([a, a], 2) and not all_present([], 1)


def test_two_machines_agree_on_one_host_and_start_torchrun_as_one_group(any_store, tmp_path):
    clock = Clock()
    first, second = node(any_store, tmp_path, "i-a", "127.0.0.2", clock), node(any_store, tmp_path, "i-b",
                                                                                "127.0.0.3", clock)
    try:
        first.join()
        second.join()
        assert (first.is_host, second.is_host) == (True, False)  # the first to write the record hosts
        assert first.rendezvous.record == second.rendezvous.record
        argvs = [n.launch(["python", "train.py", "--steps", "5"]) for n in (first, second)]
    finally:
        first.leave()
        second.leave()
    for argv, is_host in zip(argvs, ("true", "false")):
        assert argv[argv.index("--nnodes") + 1] == "2" and argv[argv.index("--nproc-per-node") + 1] == "1"
        assert argv[argv.index("--rdzv-endpoint") + 1] == first.rendezvous.endpoint
        assert argv[argv.index("--rdzv-endpoint") + 1].startswith("127.0.0.2:")
        assert argv[argv.index("--rdzv-id") + 1] == f"{JOB}-1"
        assert argv[argv.index("--rdzv-conf") + 1] == f"is_host={is_host}"
        assert argv[-3:] == ["train.py", "--steps", "5"]
    assert list(any_store.list(layout.nodes_prefix(JOB))) == []  # both left


def test_a_machine_alone_gives_up_after_the_gather_timeout(local_store, tmp_path):
    clock = Clock()
    alone = node(local_store, tmp_path, "i-a", "127.0.0.2", clock, gather_timeout=10.0, ttl=1_000.0)
    alone.join()
    try:
        with pytest.raises(JobFailed) as info:
            alone.launch(["python", "train.py"])
    finally:
        alone.leave()
    assert str(info.value) == f"job {JOB}: only 1 of its 2 machines came within 10s; not starting it"
    assert clock.now >= 1_010.0


def test_after_the_host_moves_the_epoch_its_final_round_expects_the_old_epoch_and_its_gather_the_new(
        any_store, tmp_path):
    clock = Clock()
    host, noticed = node(any_store, tmp_path, "i-a", "127.0.0.2", clock, gather_timeout=10.0), \
        node(any_store, tmp_path, "i-b", "127.0.0.3", clock)
    host.join()
    noticed.join()
    replacement = node(any_store, tmp_path, "i-c", "127.0.0.4", clock)
    try:
        host.advance_epoch()
        assert host.epoch == 2 and host.is_host
        replacement.join()
        assert (replacement.epoch, replacement.is_host) == (2, False)
        # The final round of epoch 1: the noticed machine posts to it, the replacement does not.
        assert sorted(n.instance_id for n in host.running()) == ["i-a", "i-b"]
        noticed.leave()
        argv = host.launch(["python", "train.py"])
        assert sorted(n.instance_id for n in host.wait_for_all()) == ["i-a", "i-c"]
        assert sorted(n.instance_id for n in host.running()) == ["i-a", "i-c"]
    finally:
        for machine in (host, noticed, replacement):
            machine.leave()
    assert argv[argv.index("--rdzv-id") + 1] == f"{JOB}-2"
    assert argv[argv.index("--rdzv-endpoint") + 1] == host.rendezvous.endpoint == replacement.rendezvous.endpoint


def test_a_machine_of_the_epoch_before_does_not_count_in_the_gather(local_store, tmp_path):
    clock = Clock()
    host, noticed = node(local_store, tmp_path, "i-a", "127.0.0.2", clock, gather_timeout=10.0), \
        node(local_store, tmp_path, "i-b", "127.0.0.3", clock)
    host.join()
    noticed.join()
    try:
        host.advance_epoch()
        with pytest.raises(JobFailed, match="only 1 of its 2 machines"):
            host.launch(["python", "train.py"])  # i-b, live still, is of epoch 1
    finally:
        host.leave()
        noticed.leave()


def test_a_machine_without_a_private_address_is_refused(local_store, tmp_path):
    with pytest.raises(UsageError, match="private address is unknown"):
        Node(local_store, spec(tmp_path), "i-a", None)


def _files(folder, files: dict[str, bytes]):
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


class RoundClock:
    """The rounds' clock (UTC), moved by the committer's sleeps."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def _two_members(store, tmp_path):
    clock = Clock()
    host, member = node(store, tmp_path, "i-a", "127.0.0.2", clock), node(store, tmp_path, "i-b", "127.0.0.3", clock)
    host.join()
    member.join()
    return host, member


def test_the_hosts_round_commits_once_the_other_machines_part_is_there(any_store, tmp_path):
    host, member = _two_members(any_store, tmp_path)
    rounds = ShardedRounds(Snapshots(any_store, layout.checkpoints_prefix(JOB)))
    mine = _files(tmp_path / "a", {"step-000010/.metadata": b"m", "step-000010/__0_0.distcp": b"rank0"})
    theirs = _files(tmp_path / "b", {"step-000010/__1_0.distcp": b"rank1"})
    waited = []

    def sleep(seconds: float) -> None:  # the other machine posts while the host waits
        waited.append(seconds)
        if len(waited) == 1:
            rounds.post_part(rounds.current_round(), "i-b", theirs)

    try:
        info = RoundCommitter(rounds, host, sleep=sleep)(mine, files=[], carry=[],
                                                         metadata={"step": 10, "attempt": 0}, fence=lambda: 1)
    finally:
        host.leave()
        member.leave()
    assert len(waited) == 1
    assert sorted(f.path for f in info.files) == ["step-000010/.metadata", "step-000010/__0_0.distcp",
                                                   "step-000010/__1_0.distcp"]
    assert (info.metadata["newest"], info.metadata["step"], info.metadata["attempt"]) == ("step-000010", 10, 0)
    assert rounds.snapshots.latest().seq == info.seq


def test_a_round_whose_other_part_never_comes_is_abandoned_and_the_latest_stays(local_store, tmp_path):
    host, member = _two_members(local_store, tmp_path)
    clock = RoundClock()
    rounds = ShardedRounds(Snapshots(local_store, layout.checkpoints_prefix(JOB)), clock=clock)

    def sleep(seconds: float) -> None:
        clock.now += timedelta(seconds=seconds)

    mine = _files(tmp_path / "a", {"step-000010/__0_0.distcp": b"rank0"})
    try:
        with pytest.raises(StoreError) as info:
            RoundCommitter(rounds, host, timeout_s=5.0, poll=1.0, sleep=sleep)(mine, files=[], carry=[], metadata={},
                                                                               fence=lambda: 1)
    finally:
        host.leave()
        member.leave()
    assert str(info.value) == "round 1 abandoned: no part from i-b within 5s"
    assert rounds.snapshots.latest() is None and rounds.current_round().state == "abandoned"


def test_a_member_posts_its_part_once_to_each_round_that_expects_it(local_store, tmp_path):
    host, member = _two_members(local_store, tmp_path)
    _files(tmp_path / "ckpt", {"step-000010/__1_0.distcp": b"rank1"})
    follower = NodeFollower(member, spec(tmp_path), [], tmp_path / "run")
    clock = RoundClock()
    rounds = follower.rounds = ShardedRounds(follower.snapshots, clock=clock)
    try:
        follower._post_open_round()  # no round yet: nothing
        first = rounds.open_round(["i-a", "i-b"], fence=lambda: 1, timeout_s=60)
        follower._post_open_round()
        follower._post_open_round()
        assert [p.instance for p in rounds.parts(first.seq)] == ["i-b"]
        assert [f.path for f in rounds.parts(first.seq)[0].files] == ["step-000010/__1_0.distcp"]
        clock.now += timedelta(seconds=61)
        assert rounds.commit(first, fence=lambda: 1).state == "abandoned"  # the host's part never came
        alone = rounds.open_round(["i-a"], fence=lambda: 1, timeout_s=60)  # a round without this machine
        follower._post_open_round()
        assert rounds.parts(alone.seq) == []
    finally:
        host.leave()
        member.leave()


def test_behind_names_the_others_newest_checkpoint_this_folder_lacks():
    host = Part(seq=1, instance="i-a", files=(), newest={"step-000010": 100, "step-000020": 200})
    assert behind([host], {"step-000010"}) == "step-000020"
    assert behind([host], {"step-000010", "step-000020"}) is None
    assert behind([host], {"step-000020"}) is None  # an older one pruned here: nothing to wait for
    assert behind([], set()) is None and behind([Part(seq=1, instance="i-a", files=())], set()) is None


def test_a_member_holds_its_part_back_until_it_has_the_hosts_newest_checkpoint(local_store, tmp_path):
    host, member = _two_members(local_store, tmp_path)
    folder = _files(tmp_path / "ckpt", {"step-000010/__1_0.distcp": b"rank1 at 10"})
    clock = Clock()
    follower = NodeFollower(member, spec(tmp_path), [], tmp_path / "run", clock=clock)
    rounds = follower.rounds
    try:
        rnd = rounds.open_round(["i-a", "i-b"], fence=lambda: 1, timeout_s=60)
        rounds.post_part(rnd, "i-a", _files(tmp_path / "a", {"step-000010/__0_0.distcp": b"rank0 at 10",
                                                           "step-000020/__0_0.distcp": b"rank0 at 20"}))
        follower._post_open_round()
        assert [p.instance for p in rounds.parts(rnd.seq)] == ["i-a"]  # step-000020 not here yet
        _files(folder, {"step-000020/__1_0.distcp": b"rank1 at 20"})  # renamed into place
        follower._post_open_round()
        result = rounds.commit(rnd, fence=lambda: 1)
        assert result.snapshot.metadata["newest"] == "step-000020"

        late = rounds.open_round(["i-a", "i-b"], fence=lambda: 1, timeout_s=60)
        rounds.post_part(late, "i-a", _files(tmp_path / "a", {"step-000030/__0_0.distcp": b"rank0 at 30"}))
        follower._post_open_round()
        assert [p.instance for p in rounds.parts(late.seq)] == ["i-a"]
        clock.now += CATCH_UP_S  # it never comes here: posted anyway, the round resumes from step-000020
        follower._post_open_round()
        assert rounds.commit(late, fence=lambda: 1).snapshot.metadata["newest"] == "step-000020"
    finally:
        host.leave()
        member.leave()


def test_a_round_whose_commit_fails_is_abandoned_so_the_next_opens_at_once(local_store, tmp_path):
    """A part that fails to post (a file changed while it was snapshotted) must not leave its
    round open: the final snapshot would be refused until the round's deadline."""
    host, member = _two_members(local_store, tmp_path)
    rounds = ShardedRounds(Snapshots(local_store, layout.checkpoints_prefix(JOB)))
    mine = _files(tmp_path / "a", {"step-000010/__0_0.distcp": b"rank0"})

    def failing_post(*args, **kwargs):
        raise StoreError("step-000010/__0_0.distcp changed while being snapshotted")

    rounds.post_part, post_part = failing_post, rounds.post_part
    try:
        with pytest.raises(StoreError, match="changed while"):
            RoundCommitter(rounds, host)(mine, files=[], carry=[], metadata={}, fence=lambda: 1)
        assert rounds.current_round().state == "abandoned"
        rounds.post_part = post_part
        reopened = rounds.open_round(["i-a", "i-b"], fence=lambda: 1, timeout_s=60)  # not "still open"
    finally:
        host.leave()
        member.leave()
    assert reopened.seq > 1
