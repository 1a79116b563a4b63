"""Fenced commits: a snapshot records the lease generation its writer proved right before
writing the manifest; a commit from a stale generation is refused; a snapshot of a lower
generation than an earlier one is stale, never the latest (both stores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runctl.errors import IntegrityError, LeaseLost, PreconditionFailed
from runctl.models import CheckpointInfo
from runctl.store.fencing import GENERATION_KEY, generation_of, without_stale
from runctl.store.manifest import manifest_key
from runctl.store.snapshots import Snapshots

PREFIX = "jobs/job-1/checkpoints/"


def save(folder: Path, step: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pt").write_bytes(b"weights at step %d" % step)


def manifest(store, seq: int) -> dict:
    return json.loads(store.read(manifest_key(PREFIX, seq)).data)


def test_a_commit_records_the_generation_its_fence_proved(any_store, tmp_path):
    snaps = Snapshots(any_store, PREFIX)
    save(tmp_path / "ck", 1)
    info = snaps.commit(tmp_path / "ck", metadata={"step": 1}, fence=lambda: 4)
    assert manifest(any_store, info.seq)["metadata"] == {"step": 1, GENERATION_KEY: 4}
    assert generation_of(snaps.latest()) == 4


def test_a_commit_whose_fence_fails_writes_no_manifest(any_store, tmp_path):
    snaps = Snapshots(any_store, PREFIX)
    save(tmp_path / "ck", 1)
    first = snaps.commit(tmp_path / "ck", fence=lambda: 1)

    def lost() -> int:
        raise LeaseLost("job job-1: this agent lost its lease")

    save(tmp_path / "ck", 2)
    with pytest.raises(LeaseLost):
        snaps.commit(tmp_path / "ck", fence=lost)
    assert not any_store.exists(manifest_key(PREFIX, first.seq + 1))
    assert snaps.latest().seq == first.seq


def test_a_commit_from_a_stale_generation_is_refused(any_store, tmp_path):
    save(tmp_path / "b", 1)
    newer = Snapshots(any_store, PREFIX).commit(tmp_path / "b", fence=lambda: 2)
    save(tmp_path / "a", 7)
    with pytest.raises(PreconditionFailed, match="generation 1.*generation 2"):
        Snapshots(any_store, PREFIX).commit(tmp_path / "a", fence=lambda: 1)
    assert Snapshots(any_store, PREFIX).latest().seq == newer.seq
    assert not any_store.exists(manifest_key(PREFIX, newer.seq + 1))


def publish_stale_copy(store, seq: int, generation: int) -> int:
    """What a stale writer that raced past its fence would leave: snapshot seq+1, complete,
    of a lower generation."""
    doc = manifest(store, seq)
    doc["seq"] = seq + 1
    doc["metadata"][GENERATION_KEY] = generation
    for f in doc["files"]:
        store.copy(f"{PREFIX}{seq:08d}/{f['path']}", f"{PREFIX}{seq + 1:08d}/{f['path']}")
    store.write(manifest_key(PREFIX, seq + 1), json.dumps(doc).encode())
    return seq + 1


def test_a_snapshot_of_a_lower_generation_is_never_the_latest(any_store, tmp_path):
    snaps = Snapshots(any_store, PREFIX)
    save(tmp_path / "ck", 1)
    good = snaps.commit(tmp_path / "ck", fence=lambda: 2)
    stale = publish_stale_copy(any_store, good.seq, generation=1)
    assert snaps.latest().seq == good.seq
    assert [i.seq for i in snaps.list()] == [good.seq]
    # The next commit builds on the current snapshot, takes the next free seq, and wins.
    save(tmp_path / "ck", 2)
    after = snaps.commit(tmp_path / "ck", fence=lambda: 2)
    assert after.seq == stale + 1 and snaps.latest().seq == after.seq
    assert [generation_of(i) for i in snaps.list()] == [2, 2]


def test_retention_never_keeps_a_stale_snapshot_for_a_current_one(any_store, tmp_path):
    snaps = Snapshots(any_store, PREFIX)
    save(tmp_path / "ck", 1)
    good = snaps.commit(tmp_path / "ck", fence=lambda: 2)
    stale = publish_stale_copy(any_store, good.seq, generation=1)
    assert snaps.prune(1) == []  # the stale one is newer than the latest: left alone, like a commit in progress
    assert snaps.latest().seq == good.seq
    save(tmp_path / "ck", 2)
    after = snaps.commit(tmp_path / "ck", fence=lambda: 3)
    assert snaps.prune(1) == [good.seq, stale]
    assert [i.seq for i in snaps.list()] == [after.seq]


def test_snapshots_of_an_older_runctl_are_generation_0(local_store, tmp_path):
    snaps = Snapshots(local_store, PREFIX)
    save(tmp_path / "ck", 1)
    old = snaps.commit(tmp_path / "ck")  # no fence: no generation recorded, as before
    assert GENERATION_KEY not in manifest(local_store, old.seq)["metadata"]
    assert generation_of(snaps.latest()) == 0
    save(tmp_path / "ck", 2)
    assert generation_of(snaps.commit(tmp_path / "ck", fence=lambda: 1)) == 1


def test_a_generation_that_is_not_a_count_does_not_validate(local_store, tmp_path):
    snaps = Snapshots(local_store, PREFIX)
    save(tmp_path / "ck", 1)
    info = snaps.commit(tmp_path / "ck", fence=lambda: 1)
    doc = manifest(local_store, info.seq)
    doc["metadata"][GENERATION_KEY] = "2"
    local_store.write(manifest_key(PREFIX, info.seq), json.dumps(doc).encode())
    with pytest.raises(IntegrityError, match=f"{GENERATION_KEY}.*'2'"):
        snaps.get(info.seq)


@pytest.mark.parametrize(("generations", "current"), [
    ([1, 1, 2, 2], [1, 2, 3, 4]),
    ([1, 2, 1, 2], [1, 2, 4]),  # 3 came from the old holder after the new one committed
    ([0, 0, 1], [1, 2, 3]),  # snapshots from before fencing, then fenced ones
    ([3, 1, 2, 3, 4], [1, 4, 5]),
    ([], []),
])
def test_without_stale(generations, current):
    infos = [CheckpointInfo(seq, "", (), "", {GENERATION_KEY: g} if g else {}) for seq, g in enumerate(generations, 1)]
    assert [i.seq for i in without_stale(reversed(infos))] == current


def test_a_stale_writer_cannot_claim_an_unchanged_snapshot_as_its_own(any_store, tmp_path):
    """Files equal to the latest snapshot's: nothing to write, but the commit still answers
    'durable' only to a writer that proves its lease."""
    save(tmp_path / "ck", 1)
    Snapshots(any_store, PREFIX).commit(tmp_path / "ck", fence=lambda: 2)

    def lost() -> int:
        raise LeaseLost("job job-1: this agent lost its lease")

    with pytest.raises(LeaseLost):
        Snapshots(any_store, PREFIX).commit(tmp_path / "ck", fence=lost)


class PauseAfterListing:
    """A store that runs ``meanwhile`` once, right after the commit's first listing of the
    seq folders: the writer has picked its seq and uploaded nothing yet."""

    def __init__(self, store, meanwhile) -> None:
        self._store = store
        self._meanwhile = meanwhile

    def __getattr__(self, name):
        return getattr(self._store, name)

    def list_dirs(self, prefix: str) -> list[str]:
        names = self._store.list_dirs(prefix)
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile is not None:
            meanwhile()
        return names


def test_a_writer_that_paused_after_picking_its_seq_cannot_touch_the_other_writers_snapshot(any_store, tmp_path):
    """A picks seq m and pauses; B commits m completely; A wakes: none of its uploads or
    copies may land in m (each is create-only), so its commit fails, B's m stays intact,
    and A's next commit takes m + 1."""
    first = tmp_path / "first"
    (first / "sub").mkdir(parents=True)
    (first / "model.pt").write_bytes(b"weights at step 1")
    (first / "sub" / "config.json").write_bytes(b"config 1")
    base = Snapshots(any_store, PREFIX).commit(first)
    m = base.seq + 1

    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    (b / "sub").mkdir(parents=True)
    (a / "model.pt").write_bytes(b"A's weights at step 2")  # uploaded
    (a / "sub" / "config.json").write_bytes(b"config 1")  # unchanged: copied in the store
    (b / "model.pt").write_bytes(b"B's weights at step 2, longer")
    (b / "sub" / "config.json").write_bytes(b"config 2 of B")

    def b_commits_m() -> None:
        assert Snapshots(any_store, PREFIX).commit(b).seq == m

    writer_a = Snapshots(PauseAfterListing(any_store, b_commits_m), PREFIX)
    with pytest.raises(PreconditionFailed, match=f"another writer is committing snapshot {m}"):
        writer_a.commit(a)

    snaps = Snapshots(any_store, PREFIX)
    assert snaps.verify(m) == []
    restored = tmp_path / "restored"
    snaps.restore(m, restored)
    assert (restored / "model.pt").read_bytes() == b"B's weights at step 2, longer"
    assert (restored / "sub" / "config.json").read_bytes() == b"config 2 of B"

    again = writer_a.commit(a)
    assert again.seq == m + 1 and snaps.latest().seq == m + 1
    assert snaps.verify(m + 1) == [] and snaps.verify(m) == []


def test_a_refused_writer_takes_back_the_files_it_put_into_the_other_writers_snapshot(any_store, tmp_path):
    """Checkpoints named by step share no path: each of A's uploads into m is new there
    and lands; the manifest is refused. A then deletes what it wrote (its own objects,
    nothing of B's), so B's m holds exactly its manifest's files."""
    first = tmp_path / "first"
    first.mkdir()
    (first / "step-1.ckpt").write_bytes(b"step 1")
    m = Snapshots(any_store, PREFIX).commit(first).seq + 1
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "step-2.ckpt").write_bytes(b"A's step 2")
    (a / "extra.bin").write_bytes(b"A's extra file")
    (b / "step-3.ckpt").write_bytes(b"B's step 3")

    def b_commits_m() -> None:
        assert Snapshots(any_store, PREFIX).commit(b).seq == m

    writer_a = Snapshots(PauseAfterListing(any_store, b_commits_m), PREFIX)
    with pytest.raises(PreconditionFailed, match=f"another writer committed snapshot {m}"):
        writer_a.commit(a)
    snaps = Snapshots(any_store, PREFIX)
    assert snaps.verify(m) == []
    assert [o.key.rsplit("/", 1)[1] for o in any_store.list(f"{PREFIX}{m:08d}/")] == ["MANIFEST.json", "step-3.ckpt"]
    assert writer_a.commit(a).seq == m + 1


def test_a_manifest_write_refused_by_its_own_landed_first_try_commits(any_store, tmp_path):
    """The manifest's PUT lands, its answer is lost, the retry is refused (412): the commit
    reads the manifest back, finds its own, and succeeds; nothing is taken back."""
    from runctl.testing import FaultyStore

    store = FaultyStore(any_store)
    store.inject("write", key="MANIFEST.json", when="after", error=PreconditionFailed("412 (injected)"))
    save(tmp_path / "ck", 1)
    info = Snapshots(store, PREFIX).commit(tmp_path / "ck", fence=lambda: 1)
    snaps = Snapshots(any_store, PREFIX)
    assert snaps.latest().seq == info.seq and snaps.verify(info.seq) == []
