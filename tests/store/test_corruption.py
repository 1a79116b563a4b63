"""Corruption does not spread: a bad or missing object in one snapshot is never copied into
the next one, never fails every later commit, and a bad local file is never kept by restore.
Both stores (``any_store``: a local folder and moto S3)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import pytest

from runctl.agent.sync import CheckpointSync
from runctl.errors import IntegrityError, NotFoundError
from runctl.models import FileEntry
from runctl.store.local import LocalStore
from runctl.store.snapshots import Snapshots

PREFIX = "jobs/job-1/checkpoints/"
MODEL_1 = PREFIX + "00000001/model.pt"


def write(root: Path, rel: str, data: bytes, *, age_s: float = 10) -> Path:
    """Write ``rel`` with a modification time ``age_s`` ago (old enough for the hash cache
    to trust its timestamp)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def flip_in_place(path: Path) -> None:
    """Change one byte of ``path`` where it lies (same size, same inode), keeping its mtime:
    what bit rot or a careless tool does."""
    before = os.stat(path)
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def corrupt(store, key: str) -> None:
    """Overwrite the object's bytes, same size: in place in a folder, a new PUT on S3."""
    if isinstance(store, LocalStore):
        flip_in_place(store.root / key)
    else:
        data = store.read(key).data
        store.write(key, bytes([data[0] ^ 0xFF]) + data[1:])


@pytest.fixture
def source(tmp_path) -> Path:
    root = tmp_path / "ckpt"
    write(root, "model.pt", os.urandom(300_000))
    write(root, "optim/state.bin", os.urandom(70_000))
    return root


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_corrupt_object_is_not_copied_into_the_next_snapshot(any_store, source, tmp_path, caplog):
    snaps = Snapshots(any_store, PREFIX)
    snaps.commit(source)
    corrupt(any_store, MODEL_1)
    write(source, "optim/state.bin", os.urandom(70_000))  # a change, so a new snapshot is due

    with caplog.at_level(logging.WARNING, logger="runctl.store.snapshots"):
        second = snaps.commit(source)
    assert second.seq == 2
    assert snaps.verify(2) == []  # model.pt was uploaded from the local file, not copied
    snaps.restore(2, tmp_path / "restored")
    assert tree(tmp_path / "restored") == tree(source)
    assert [r for r in caplog.records if r.levelno == logging.WARNING and MODEL_1 in r.getMessage()]

    problems = snaps.verify(1)  # the bad object is still reported where it is
    assert len(problems) == 1 and problems[0].startswith("model.pt: sha256 expected")

    write(source, "optim/state.bin", os.urandom(70_000))
    assert snaps.commit(source).seq == 3 and snaps.verify(3) == []  # copies from 2 again


def test_a_missing_object_does_not_fail_the_next_commits(any_store, source, tmp_path):
    snaps = Snapshots(any_store, PREFIX)
    snaps.commit(source)
    any_store.delete([MODEL_1])
    for seq in (2, 3):
        write(source, "optim/state.bin", os.urandom(70_000))
        assert snaps.commit(source).seq == seq
        assert snaps.verify(seq) == []
    snaps.restore(3, tmp_path / "restored")
    assert tree(tmp_path / "restored") == tree(source)
    assert snaps.verify(1) == ["model.pt: missing from the store"]


def test_a_carried_file_whose_object_is_gone_fails_the_commit_until_it_settles(any_store, source):
    # A carried file is still being written: there is no good local copy to upload instead.
    snaps = Snapshots(any_store, PREFIX)
    snaps.commit(source)
    any_store.delete([MODEL_1])
    write(source, "optim/state.bin", os.urandom(70_000))
    with pytest.raises(IntegrityError, match=r"cannot carry model\.pt into snapshot 2"):
        snaps.commit(source, files=["optim/state.bin"], carry=["model.pt"])
    assert snaps.latest().seq == 1  # nothing half-done counts
    # Once settled, uploaded. Its number is 2 or 3: whether the refused try had already put
    # optim/state.bin under 2 depends on which of the parallel transfers ran first.
    settled = snaps.commit(source)
    assert settled.seq in (2, 3) and snaps.latest() == settled and snaps.verify(settled.seq) == []


def test_verify_reports_a_bad_object_in_every_snapshot_that_holds_it(any_store, source):
    snaps = Snapshots(any_store, PREFIX)
    snaps.commit(source)
    write(source, "optim/state.bin", os.urandom(70_000))
    snaps.commit(source)  # model.pt copied from snapshot 1 (a hard link in a folder store)
    if isinstance(any_store, LocalStore):
        flip_in_place(any_store.root / MODEL_1)  # shared bytes: both snapshots are hit
        bad = [1, 2]
    else:
        corrupt(any_store, MODEL_1)  # S3 copies are objects of their own
        bad = [1]
    for seq in (1, 2):
        problems = snaps.verify(seq)
        assert (len(problems) == 1 and problems[0].startswith("model.pt: sha256 expected")) == (seq in bad)


def test_restore_replaces_a_local_file_changed_behind_the_hash_cache(any_store, source, tmp_path):
    snaps = Snapshots(any_store, PREFIX)
    snaps.commit(source)  # the hash cache now knows model.pt by its size, mtime and inode
    good = (source / "model.pt").read_bytes()
    flip_in_place(source / "model.pt")  # same size, same mtime, same inode, other bytes
    snaps.restore(1, source)
    assert (source / "model.pt").read_bytes() == good

    target = tmp_path / "target"
    snaps.restore(1, target)  # remembered as just verified
    flip_in_place(target / "model.pt")
    snaps.restore(1, target)
    assert (target / "model.pt").read_bytes() == good


@pytest.mark.parametrize("damage", ["corrupt", "delete"])
def test_store_copy_checks_the_expected_content(any_store, damage):
    data = os.urandom(5000)
    any_store.write("a/w.bin", data)
    entry = FileEntry("w.bin", len(data), sha(data))
    any_store.copy("a/w.bin", "b/w.bin", expect=entry)
    assert any_store.read("b/w.bin").data == data

    if damage == "corrupt":
        corrupt(any_store, "a/w.bin")
        expected = rf"a/w\.bin does not hold the expected content: sha256 expected {entry.sha256}"
        with pytest.raises(IntegrityError, match=expected):
            any_store.copy("a/w.bin", "c/w.bin", expect=entry)
    else:
        any_store.delete(["a/w.bin"])
        with pytest.raises(NotFoundError, match=r"a/w\.bin does not exist"):
            any_store.copy("a/w.bin", "c/w.bin", expect=entry)
    assert not any_store.exists("c/w.bin")  # no bad copy is left behind


def test_store_copy_checks_the_size(any_store):
    data = os.urandom(100)
    any_store.write("a/w.bin", data)
    with pytest.raises(IntegrityError, match="size expected 101, got 100"):
        any_store.copy("a/w.bin", "c/w.bin", expect=FileEntry("w.bin", 101, sha(data)))
    assert not any_store.exists("c/w.bin")


def test_the_agent_keeps_committing_after_an_object_of_its_snapshot_is_deleted(any_store, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    snaps = Snapshots(any_store, PREFIX)
    errors: list[Exception] = []
    now = time.time()  # the files below are 10 s old: settled
    sync = CheckpointSync(snaps, folder, sync_interval=0.0, keep_last_n=10, quiet_period=1.0,
                          clock=lambda: now, on_error=errors.append)

    def settle():
        result = None
        for _ in range(2):
            result = sync.tick() or result
        return result

    write(folder, "weights.pt", os.urandom(200_000))
    assert settle().snapshot.seq == 1
    any_store.delete([PREFIX + "00000001/weights.pt"])
    for step in (2, 3):
        write(folder, f"step-{step}.json", b'{"step": %d}' % step)
        result = settle()
        assert result is not None and result.snapshot.seq == step, errors
        assert snaps.verify(step) == []
    assert errors == []


def test_s3_checks_a_copy_too_big_for_one_request_by_reading_it_back(s3_store, monkeypatch):
    from runctl.store import s3

    monkeypatch.setattr(s3, "COPY_PART_THRESHOLD", 5 * s3.MiB)  # S3's smallest part size
    monkeypatch.setattr(s3, "COPY_PART_SIZE", 5 * s3.MiB)
    data = os.urandom(11 * s3.MiB)
    s3_store.write("a/big.bin", data)
    entry = FileEntry("big.bin", len(data), sha(data))
    s3_store.copy("a/big.bin", "b/big.bin", expect=entry)
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=s3_store._full("b/big.bin"))
    assert head["ETag"].strip('"').endswith("-3")  # copied in three parts
    assert s3_store.read("b/big.bin").data == data

    corrupt(s3_store, "a/big.bin")
    with pytest.raises(IntegrityError, match=r"a/big\.bin does not hold the expected content: sha256 expected"):
        s3_store.copy("a/big.bin", "c/big.bin", expect=entry)
    assert not s3_store.exists("c/big.bin")


def test_s3_checks_a_copy_by_its_checksum_without_reading_it(s3_store):
    data = os.urandom(5000)
    s3_store.write("a/w.bin", data)
    reads = []
    s3_store.client.meta.events.register("before-call.s3.GetObject", lambda **kw: reads.append(kw))
    s3_store.copy("a/w.bin", "b/w.bin", expect=FileEntry("w.bin", len(data), sha(data)))
    assert reads == []  # no byte of the object crossed the network


def test_s3_without_copy_checksums_reads_the_copy_back(s3_store):
    # An S3-compatible store that computes no checksum on copy: the copy is hashed instead.
    def drop_checksum(parsed, **_):
        parsed.get("CopyObjectResult", {}).pop("ChecksumSHA256", None)

    s3_store.client.meta.events.register("after-call.s3.CopyObject", drop_checksum)
    data = os.urandom(5000)
    s3_store.write("a/w.bin", data)
    entry = FileEntry("w.bin", len(data), sha(data))
    s3_store.copy("a/w.bin", "b/w.bin", expect=entry)
    assert s3_store.read("b/w.bin").data == data
    corrupt(s3_store, "a/w.bin")
    with pytest.raises(IntegrityError, match=r"a/w\.bin does not hold the expected content: sha256 expected"):
        s3_store.copy("a/w.bin", "c/w.bin", expect=entry)
    assert not s3_store.exists("c/w.bin")
