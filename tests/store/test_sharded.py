"""Sharded snapshots (runctl.store.sharded) on both stores (``any_store``: a folder and S3
on moto): two source folders stand for two machines, their parts posted from threads (or a
subprocess, to be SIGKILLed), one committer."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from aws_cli import aws_cli_copy_of_snapshot
from racing import ReadTogether, in_threads
from runctl.errors import PreconditionFailed, StoreError
from runctl.store.manifest import manifest_key
from runctl.store.rounds import part_key, parts_prefix, round_key
from runctl.store.sharded import ShardedRounds
from runctl.store.snapshots import Snapshots

PREFIX = "jobs/job-1/checkpoints/"
MACHINES = ("i-0aaa", "i-0bbb")
POSTER = Path(__file__).with_name("part_poster.py")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


class CountingStore:
    """Forwards every call; counts the bytes uploaded and the copies made."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.uploaded: dict[str, int] = {}
        self.copied: list[str] = []

    def upload(self, path, key, **kwargs):
        self._inner.upload(path, key, **kwargs)
        self.uploaded[key] = os.path.getsize(path)

    def copy(self, src_key, dst_key, **kwargs):
        self._inner.copy(src_key, dst_key, **kwargs)
        self.copied.append(dst_key)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def write(root: Path, rel: str, data: bytes, *, mtime: float | None = None) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def save_step(node: Path, rank: int, step: int, *, mtime: float, metadata: bool = False) -> None:
    """What torch.distributed.checkpoint leaves on a machine: its rank's file (and, on rank
    0's machine, .metadata) in step-NNNNNN, renamed into place once every rank saved."""
    folder = f"step-{step:06d}"
    write(node, f"{folder}/__{rank}_0.distcp", os.urandom(50_000 + rank), mtime=mtime)
    if metadata:
        write(node, f"{folder}/.metadata", b"metadata of step %d" % step, mtime=mtime)


@pytest.fixture
def nodes(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "node-a", tmp_path / "node-b"
    then = time.time() - 3600
    save_step(a, 0, 100, mtime=then, metadata=True)
    save_step(b, 1, 100, mtime=then + 1)
    save_step(a, 0, 200, mtime=then + 10, metadata=True)
    save_step(b, 1, 200, mtime=then + 11)
    return a, b


def machines(store, clock):
    """The committer and one ShardedRounds per machine (each its own Snapshots and cache)."""
    return [ShardedRounds(Snapshots(store, PREFIX, workers=4), clock=clock) for _ in range(3)]


def post_together(posters, rnd, folders):
    return in_threads([lambda p=p, m=m, f=f: p.post_part(rnd, m, f) for p, m, f in zip(posters, MACHINES, folders)])


def test_two_machines_make_one_snapshot_of_both_their_files(any_store, nodes, tmp_path, request):
    clock = Clock()
    committer, *posters = machines(any_store, clock)
    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    assert rnd.seq == 1 and committer.current_round() == rnd
    post_together(posters, rnd, nodes)

    result = committer.commit(rnd, fence=lambda: 1, metadata={"step": 200})
    assert result.state == "committed"
    info = result.snapshot
    both = {**tree(nodes[0]), **tree(nodes[1])}
    assert {f.path for f in info.files} == set(both) and len(both) == 6
    assert info.metadata == {"step": 200, "newest": "step-000200", "lease_generation": 1}
    assert committer.snapshots.latest() == info and committer.snapshots.verify(info) == []
    assert committer.current_round().state == "committed"
    assert committer.commit(rnd, fence=lambda: 1) == result  # asked again: the same snapshot

    target = tmp_path / "restored"
    committer.snapshots.restore(info, target)
    assert tree(target) == both
    # The part records are beside the snapshot folder, not in it.
    assert {o.key for o in any_store.list(PREFIX + "00000001/")} == (
        {PREFIX + "00000001/" + p for p in both} | {manifest_key(PREFIX, 1)})
    if request.node.callspec.params["any_store"] == "s3":
        got = aws_cli_copy_of_snapshot(any_store, f"{PREFIX}00000001/", tmp_path / "by-aws-cli")
        assert {p: got[p] for p in both} == both


def test_a_round_with_a_part_missing_is_never_the_latest_and_the_next_commits(any_store, nodes, tmp_path):
    clock = Clock()
    committer, *posters = machines(any_store, clock)
    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    post_together(posters, rnd, nodes)
    first = committer.commit(rnd, fence=lambda: 1).snapshot

    save_step(nodes[0], 0, 300, mtime=time.time() - 60, metadata=True)
    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    assert rnd.seq == 2
    posters[0].post_part(rnd, MACHINES[0], nodes[0])  # the other machine never posts
    waiting = committer.commit(rnd, fence=lambda: 1)
    assert (waiting.state, waiting.missing) == ("open", (MACHINES[1],))
    assert committer.snapshots.latest() == first
    with pytest.raises(PreconditionFailed, match="still open"):
        committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)

    clock.now += timedelta(seconds=61)
    abandoned = committer.commit(rnd, fence=lambda: 1)
    assert (abandoned.state, abandoned.missing) == ("abandoned", (MACHINES[1],))
    assert not any_store.exists(manifest_key(PREFIX, 2))
    assert committer.snapshots.latest() == first and [i.seq for i in committer.snapshots.list()] == [1]
    with pytest.raises(PreconditionFailed, match="not the open round"):
        posters[1].post_part(rnd, MACHINES[1], nodes[1])  # too late
    with pytest.raises(PreconditionFailed, match="does not expect i-0ccc"):
        posters[1].post_part(rnd, "i-0ccc", nodes[1])

    # A round nobody posted to leaves no folder; its seq is not used again.
    empty = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    assert empty.seq == 3
    clock.now += timedelta(seconds=61)
    assert committer.commit(empty, fence=lambda: 1).state == "abandoned"

    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    assert rnd.seq == 4
    save_step(nodes[1], 1, 300, mtime=time.time() - 50)
    post_together(posters, rnd, nodes)
    done = committer.commit(rnd, fence=lambda: 1)
    assert done.state == "committed" and committer.snapshots.latest() == done.snapshot
    assert done.snapshot.metadata["newest"] == "step-000300"

    # The abandoned round's objects and every part record of older rounds go at the next prune.
    assert committer.prune(1) == [1, 2]
    assert committer.snapshots.all_seqs() == [4]
    assert list(any_store.list(parts_prefix(PREFIX, 2))) == []
    assert any_store.exists(part_key(PREFIX, 4, MACHINES[0]))
    committer.snapshots.restore(4, tmp_path / "restored")
    assert tree(tmp_path / "restored") == {**tree(nodes[0]), **tree(nodes[1])}


class FailingUpload(CountingStore):
    """Fails the upload of one file, as a machine whose poster crashed there."""

    def __init__(self, inner, failing: str) -> None:
        super().__init__(inner)
        self._failing = failing

    def upload(self, path, key, **kwargs):
        if key.endswith(self._failing):
            raise StoreError(f"lost the connection uploading {key}")
        super().upload(path, key, **kwargs)


def test_a_machine_that_posts_again_after_a_failure_completes_the_round(any_store, nodes):
    clock = Clock()
    committer, poster_a, poster_b = machines(any_store, clock)
    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    poster_a.post_part(rnd, MACHINES[0], nodes[0])
    crashing = ShardedRounds(Snapshots(FailingUpload(any_store, "step-000200/__1_0.distcp"), PREFIX, workers=1),
                             clock=clock)
    with pytest.raises(StoreError, match="lost the connection"):
        crashing.post_part(rnd, MACHINES[1], nodes[1])
    assert committer.commit(rnd, fence=lambda: 1).missing == (MACHINES[1],)

    part = poster_b.post_part(rnd, MACHINES[1], nodes[1])
    assert part.shared == ("step-000100/__1_0.distcp",)  # its own first try's, found there
    assert poster_b.post_part(rnd, MACHINES[1], nodes[1]) == part  # recorded: returned as it is
    info = committer.commit(rnd, fence=lambda: 1).snapshot
    assert info.seq == 1 and committer.snapshots.verify(info) == []


def test_newest_is_a_step_every_machine_has_not_one_only_some_renamed(any_store, nodes):
    clock = Clock()
    committer, *posters = machines(any_store, clock)
    save_step(nodes[0], 0, 300, mtime=time.time(), metadata=True)  # node b has not renamed step-000300 yet
    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    post_together(posters, rnd, nodes)
    info = committer.commit(rnd, fence=lambda: 1).snapshot
    assert "step-000300/__0_0.distcp" in {f.path for f in info.files}
    assert info.metadata["newest"] == "step-000200"


def test_a_clash_keeps_the_first_writers_file_and_same_content_is_shared(any_store, nodes, tmp_path, caplog):
    clock = Clock()
    committer, *posters = machines(any_store, clock)
    write(nodes[0], "config.json", b'{"lr": 0.1}')
    write(nodes[1], "config.json", b'{"lr": 0.1}')
    write(nodes[0], "notes.txt", b"machine a")
    write(nodes[1], "notes.txt", b"machine b")
    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    first = posters[0].post_part(rnd, MACHINES[0], nodes[0])
    with caplog.at_level(logging.WARNING, logger="runctl.store.sharded"):
        second = posters[1].post_part(rnd, MACHINES[1], nodes[1])
    assert first.shared == () and first.clashes == ()
    assert second.shared == ("config.json",)
    assert [c.path for c in second.clashes] == ["notes.txt"]
    assert "notes.txt" not in {f.path for f in second.files}
    assert any("notes.txt" in r.getMessage() and "clashes" in r.getMessage() for r in caplog.records)

    info = committer.commit(rnd, fence=lambda: 1).snapshot
    committer.snapshots.restore(info, tmp_path / "restored")
    restored = tree(tmp_path / "restored")
    assert restored["notes.txt"] == b"machine a" and restored["config.json"] == b'{"lr": 0.1}'
    assert committer.snapshots.verify(info) == []


def test_content_a_retained_snapshot_holds_is_copied_not_uploaded(any_store, nodes, tmp_path):
    clock = Clock()
    counting = CountingStore(any_store)
    committer, *posters = machines(counting, clock)
    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    post_together(posters, rnd, nodes)
    committer.commit(rnd, fence=lambda: 1)
    assert sum(counting.uploaded.values()) == sum(map(len, {**tree(nodes[0]), **tree(nodes[1])}.values()))

    # Both machines restore the snapshot (every rank's files), then each saves step 300.
    for node in nodes:
        committer.snapshots.restore(1, node)
    save_step(nodes[0], 0, 300, mtime=time.time() - 60, metadata=True)
    save_step(nodes[1], 1, 300, mtime=time.time() - 59)
    counting.uploaded.clear()
    counting.copied.clear()
    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    # One after the other: moto checks a completion's If-None-Match before completing, not
    # atomically as S3 does, so two machines copying one path at once may both succeed there.
    parts = [poster.post_part(rnd, machine, node) for poster, machine, node in zip(posters, MACHINES, nodes)]
    new = {f"{PREFIX}00000002/{p}" for p in ("step-000300/__0_0.distcp", "step-000300/.metadata",
                                              "step-000300/__1_0.distcp")}
    assert set(counting.uploaded) == new  # only step 300's files went up
    assert sum(counting.uploaded.values()) == sum(
        len(data) for rel, data in {**tree(nodes[0]), **tree(nodes[1])}.items() if rel.startswith("step-000300"))
    old = {f"{PREFIX}00000002/{f.path}" for f in committer.snapshots.get(1).files}
    assert sorted(counting.copied) == sorted(old)  # each old file copied once; the other machine found it there
    assert [len(p.shared) for p in parts] == [0, 6]
    info = committer.commit(rnd, fence=lambda: 1).snapshot
    assert len(info.files) == 9 and committer.snapshots.verify(info) == []


def test_a_lower_lease_generation_cannot_commit(any_store, nodes):
    clock = Clock()
    committer, *posters = machines(any_store, clock)
    rnd = committer.open_round(MACHINES, fence=lambda: 2, timeout_s=60)
    post_together(posters, rnd, nodes)
    good = committer.commit(rnd, fence=lambda: 2).snapshot

    # A committer of generation 1 opening a round over generation 2's: refused.
    with pytest.raises(PreconditionFailed, match="generation 2"):
        committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    # Its fence proving only generation 1 when it commits: refused, no manifest.
    rnd = committer.open_round(MACHINES, fence=lambda: 2, timeout_s=60)
    post_together(posters, rnd, nodes)
    with pytest.raises(PreconditionFailed, match="generation 1"):
        committer.commit(rnd, fence=lambda: 1)
    assert not any_store.exists(manifest_key(PREFIX, rnd.seq)) and committer.snapshots.latest() == good

    # A stale committer whose round a newer committer replaced cannot commit it either.
    stale = committer.open_round(MACHINES, fence=lambda: 3, timeout_s=60)
    post_together(posters, stale, nodes)
    with pytest.raises(PreconditionFailed, match="opened by generation 3"):  # not below its own round's
        committer.commit(stale, fence=lambda: 2)
    newer = committer.open_round(MACHINES, fence=lambda: 4, timeout_s=60)
    post_together(posters, newer, nodes)
    with pytest.raises(PreconditionFailed, match="no longer the current round"):
        committer.commit(stale, fence=lambda: 3)
    assert committer.commit(newer, fence=lambda: 4).snapshot.metadata["lease_generation"] == 4


def test_sigkill_of_one_machines_poster_mid_upload_leaves_the_previous_snapshot_latest(any_store, nodes, tmp_path):
    clock = Clock()
    committer, *posters = machines(any_store, clock)
    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    post_together(posters, rnd, nodes)
    first = committer.commit(rnd, fence=lambda: 1).snapshot

    save_step(nodes[0], 0, 300, mtime=time.time() - 60, metadata=True)
    write(nodes[1], "step-000300/__1_0.distcp", os.urandom(64 << 20))  # big enough to be killed inside
    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    posters[0].post_part(rnd, MACHINES[0], nodes[0])
    poster = subprocess.Popen([sys.executable, str(POSTER), any_store.url, PREFIX, MACHINES[1], str(nodes[1])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert poster.stdout.readline() == b"ready\n", poster.stderr.read().decode()
        for line in poster.stdout:  # the small files may go first; the big one is the last upload
            if line.strip().endswith(b"step-000300/__1_0.distcp"):
                poster.kill()
                break
        else:
            pytest.fail(f"the poster never uploaded the big file: {poster.stderr.read().decode()}")
    finally:
        poster.kill()
        poster.wait()
        poster.stdout.close()
        poster.stderr.close()
    assert poster.returncode == -9
    # Killed before its file was whole: no object, no part record.
    assert not any_store.exists(f"{PREFIX}00000002/step-000300/__1_0.distcp")
    assert not any_store.exists(part_key(PREFIX, 2, MACHINES[1]))

    assert committer.commit(rnd, fence=lambda: 1).state == "open"
    clock.now += timedelta(seconds=61)
    assert committer.commit(rnd, fence=lambda: 1).state == "abandoned"
    assert committer.snapshots.latest() == first

    rnd = committer.open_round(MACHINES, fence=lambda: 1, timeout_s=60)
    post_together(posters, rnd, nodes)
    info = committer.commit(rnd, fence=lambda: 1).snapshot
    assert info.seq == 3 and info.metadata["newest"] == "step-000300" and committer.snapshots.verify(info) == []
    assert committer.prune(1) == [1, 2] and committer.snapshots.all_seqs() == [3]


def test_of_two_committers_opening_a_round_at_once_one_wins(any_store):
    clock = Clock()
    committer = ShardedRounds(Snapshots(any_store, PREFIX), clock=clock)
    committer.open_round(MACHINES, fence=lambda: 1, timeout_s=0)  # a record to replace on its version
    together = ReadTogether(any_store, round_key(PREFIX), 2)  # both read the record, then both write
    racing = [ShardedRounds(Snapshots(together, PREFIX), clock=clock) for _ in range(2)]

    def open_one(rounds):
        try:
            return rounds.open_round(MACHINES, fence=lambda: 2, timeout_s=60)
        except PreconditionFailed:
            return None

    opened = in_threads([lambda r=r: open_one(r) for r in racing])
    assert len([r for r in opened if r is not None]) == 1
    assert committer.current_round() in opened and committer.current_round().seq == 2
