"""The snapshot protocol against both stores (``any_store``: a local folder and moto S3)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from runctl.errors import IntegrityError, NotFoundError, PreconditionFailed, StoreError
from runctl.store import hashing
from runctl.store.manifest import FORMAT, manifest_key
from runctl.store.snapshot_transfers import SnapshotFileWriter
from runctl.store.snapshots import Snapshots

PREFIX = "jobs/job-1/checkpoints/"


class CountingStore:
    """A store proxy that counts uploads, copies and downloads (and can run a hook)."""

    def __init__(self, store, on_upload=None):
        self._store = store
        self.uploads: list[str] = []
        self.copies: list[tuple[str, str]] = []
        self.downloads: list[str] = []
        self.on_upload = on_upload

    def __getattr__(self, name):
        return getattr(self._store, name)

    def upload(self, path, key, **kwargs):
        self._store.upload(path, key, **kwargs)
        self.uploads.append(key)
        if self.on_upload:
            self.on_upload(path, key)

    def copy(self, src_key, dst_key, **kwargs):
        self._store.copy(src_key, dst_key, **kwargs)
        self.copies.append((src_key, dst_key))

    def download(self, key, path, *, progress=None):
        self._store.download(key, path, progress=progress)
        self.downloads.append(key)


def write(root: Path, rel: str, data: bytes, *, age_s: float = 0) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age_s:  # old enough for the hash cache to trust its timestamp
        then = time.time() - age_s
        os.utime(path, (then, then))


def tree(root: Path) -> dict[str, bytes]:
    """Every file below root (hidden ones included), as relative path -> bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


@pytest.fixture
def source(tmp_path) -> Path:
    root = tmp_path / "ckpt"
    write(root, "model.pt", os.urandom(300_000))
    write(root, "optim/state.bin", os.urandom(70_000))
    write(root, "optim/deep/nested/rng.json", b'{"seed": 1}')
    write(root, "empty.txt", b"")
    return root


def test_roundtrip_is_byte_exact(any_store, source, tmp_path):
    snaps = Snapshots(any_store, PREFIX)
    assert snaps.latest() is None and snaps.list() == []
    info = snaps.commit(source, metadata={"step": 100})
    assert info.seq == 1 and info.metadata == {"step": 100}
    assert [f.path for f in info.files] == ["empty.txt", "model.pt", "optim/deep/nested/rng.json", "optim/state.bin"]
    assert info.total_bytes == sum(len(b) for b in tree(source).values())
    assert info.url == f"{any_store.url.rstrip('/')}/{PREFIX}00000001"
    assert snaps.latest() == info
    assert snaps.list() == [info]
    assert snaps.get(1) == info

    target = tmp_path / "restored"
    assert snaps.restore(info, target) == info
    assert tree(target) == tree(source)

    # The snapshot folder holds the files under their own names (aws s3 cp --recursive works).
    keys = {o.key[len(PREFIX) :] for o in any_store.list(PREFIX)}
    assert keys == {"00000001/" + p for p in tree(source)} | {"00000001/MANIFEST.json"}
    manifest = json.loads(any_store.read(manifest_key(PREFIX, 1)).data)
    assert manifest["format"] == FORMAT and manifest["seq"] == 1 and manifest["total_bytes"] == info.total_bytes


def test_unchanged_files_are_copied_not_uploaded(any_store, source):
    counting = CountingStore(any_store)
    snaps = Snapshots(counting, PREFIX)
    snaps.commit(source)
    assert len(counting.uploads) == 4 and counting.copies == []

    counting.uploads.clear()
    write(source, "model.pt", os.urandom(300_000))  # changed
    write(source, "new/extra.bin", b"extra")  # added
    os.rename(source / "optim/state.bin", source / "optim/renamed.bin")  # same bytes, new path
    info = snaps.commit(source)
    assert info.seq == 2
    assert sorted(counting.uploads) == [PREFIX + "00000002/model.pt", PREFIX + "00000002/new/extra.bin"]
    assert sorted(dst for _, dst in counting.copies) == [
        PREFIX + "00000002/empty.txt",
        PREFIX + "00000002/optim/deep/nested/rng.json",
        PREFIX + "00000002/optim/renamed.bin",
    ]
    assert (PREFIX + "00000001/optim/state.bin", PREFIX + "00000002/optim/renamed.bin") in counting.copies
    assert snaps.verify(2) == [] and snaps.verify(1) == []


def test_carried_files_keep_the_latest_snapshots_version(any_store, source, tmp_path):
    counting = CountingStore(any_store)
    snaps = Snapshots(counting, PREFIX)
    first = snaps.commit(source)
    old_model = (source / "model.pt").read_bytes()
    counting.uploads.clear()
    write(source, "model.pt", b"half-written")  # still being written: carried, not read
    write(source, "step-2.pt", b"new checkpoint")
    write(source, "never-seen.bin", b"in progress")  # carried, but the latest lacks it
    files = ["empty.txt", "optim/deep/nested/rng.json", "optim/state.bin", "step-2.pt"]
    info = snaps.commit(source, files=files, carry=["model.pt", "never-seen.bin"])
    assert info.seq == first.seq + 1
    assert counting.uploads == [PREFIX + "00000002/step-2.pt"]
    restored = tmp_path / "restored"
    snaps.restore(info, restored)
    assert (restored / "model.pt").read_bytes() == old_model
    assert not (restored / "never-seen.bin").exists()
    assert snaps.verify(info) == []


def test_identical_commit_creates_nothing(any_store, source):
    counting = CountingStore(any_store)
    snaps = Snapshots(counting, PREFIX)
    first = snaps.commit(source)
    before = sorted(o.key for o in any_store.list(PREFIX))
    counting.uploads.clear()
    assert snaps.commit(source, metadata={"ignored": True}) == first
    assert Snapshots(any_store, PREFIX).commit(source) == first  # a fresh instance (empty hash cache) too
    assert counting.uploads == [] and counting.copies == []
    assert sorted(o.key for o in any_store.list(PREFIX)) == before


def test_nothing_to_commit_returns_none(any_store, tmp_path):
    snaps = Snapshots(any_store, PREFIX)
    (tmp_path / "empty").mkdir()
    assert snaps.commit(tmp_path / "empty") is None
    write(tmp_path / "one", "a", b"a")
    assert snaps.commit(tmp_path / "one", files=[]) is None
    assert snaps.list() == []


def test_commit_selected_files_and_skips(any_store, source, tmp_path, caplog):
    outside = tmp_path / "outside.txt"
    outside.write_text("not mine")
    (source / "link.txt").symlink_to(outside)
    (source / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    write(source, ".model.pt.runctl-tmp-abc123", b"half written")
    write(source, "MANIFEST.json", b"the user's own")
    snaps = Snapshots(any_store, PREFIX)
    info = snaps.commit(source)
    assert [f.path for f in info.files] == ["empty.txt", "model.pt", "optim/deep/nested/rng.json", "optim/state.bin"]
    assert "symlink" in caplog.text and "MANIFEST.json is reserved" in caplog.text

    write(source, "model.pt", b"new model")
    info = snaps.commit(source, files=["model.pt", "./optim/state.bin"])
    assert [f.path for f in info.files] == ["model.pt", "optim/state.bin"]
    with pytest.raises(NotFoundError, match="missing.bin"):
        snaps.commit(source, files=["missing.bin"])


def test_new_seq_skips_leftovers_of_a_crashed_commit(any_store, source, tmp_path):
    snaps = Snapshots(any_store, PREFIX)
    snaps.commit(source)
    # A crashed commit: some files of seq 2, no manifest.
    any_store.write(PREFIX + "00000002/model.pt", b"partial")
    assert snaps.latest().seq == 1
    assert [i.seq for i in snaps.list()] == [1]
    with pytest.raises(NotFoundError, match="no complete checkpoint snapshot 2"):
        snaps.get(2)
    write(source, "model.pt", b"after the crash")
    info = snaps.commit(source)
    assert info.seq == 3 and snaps.latest() == info
    snaps.restore(3, tmp_path / "out")
    assert (tmp_path / "out/model.pt").read_bytes() == b"after the crash"


def test_prune_keeps_last_n_and_newer_incomplete(any_store, source):
    snaps = Snapshots(any_store, PREFIX)
    for i in range(5):
        write(source, "model.pt", f"model {i}".encode())
        assert snaps.commit(source).seq == i + 1
    any_store.write(PREFIX + "00000006/model.pt", b"crashed, older than latest")
    write(source, "model.pt", b"model 6")
    assert snaps.commit(source).seq == 7
    any_store.write(PREFIX + "00000008/model.pt", b"a commit in progress")

    assert snaps.prune(2, dry_run=True) == [1, 2, 3, 4, 6]
    assert [i.seq for i in snaps.list()] == [1, 2, 3, 4, 5, 7]
    assert snaps.prune(2) == [1, 2, 3, 4, 6]
    assert [i.seq for i in snaps.list()] == [5, 7]
    assert sorted({o.key.split("/")[3] for o in any_store.list(PREFIX)}) == ["00000005", "00000007", "00000008"]
    assert snaps.verify(5) == [] and snaps.verify(7) == []  # copies survive their source's deletion
    assert snaps.prune(2) == []
    with pytest.raises(Exception, match="at least 1"):
        snaps.prune(0)


def test_verify_catches_corruption(any_store, source):
    snaps = Snapshots(any_store, PREFIX)
    info = snaps.commit(source)
    assert snaps.verify(info) == []
    model = PREFIX + "00000001/model.pt"
    original = any_store.read(model).data
    any_store.write(model, bytes([original[0] ^ 1]) + original[1:])  # same size, one bit flipped
    any_store.delete([PREFIX + "00000001/optim/state.bin"])
    any_store.write(PREFIX + "00000001/stray.bin", b"?")
    problems = snaps.verify(1)
    assert len(problems) == 3
    assert problems[0].startswith("model.pt: sha256 expected " + next(f.sha256 for f in info.files if f.path == "model.pt"))
    assert problems[1] == "optim/state.bin: missing from the store"
    assert problems[2] == "stray.bin: in the snapshot folder but not in its manifest"

    any_store.write(manifest_key(PREFIX, 1), b"{not json")
    assert "is not valid JSON" in snaps.verify(1)[0]
    with pytest.raises(NotFoundError):
        snaps.verify(9)


def _malicious(store, seq: int, path: str) -> None:
    data = b"evil"
    manifest = {
        "format": FORMAT, "seq": seq, "created": "2026-01-01T00:00:00Z", "metadata": {},
        "files": [{"path": "fine.txt", "size": 4, "sha256": hashlib.sha256(data).hexdigest()},
                  {"path": path, "size": 4, "sha256": hashlib.sha256(data).hexdigest()}],
    }
    store.write(f"{PREFIX}{seq:08d}/fine.txt", data)
    store.write(manifest_key(PREFIX, seq), json.dumps(manifest).encode())


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../evil.txt", "contains '.' or '..'"),
        ("a/../../evil.txt", "contains '.' or '..'"),
        ("/tmp/evil.txt", "is absolute"),
        ("a\\..\\evil.txt", "contains a backslash"),
        ("a//evil.txt", "has an empty path component"),
        ("fine.txt", "is listed twice"),
    ],
)
def test_restore_refuses_unsafe_manifest(any_store, tmp_path, path, reason):
    _malicious(any_store, 1, path)
    snaps = Snapshots(any_store, PREFIX)
    target = tmp_path / "sandbox" / "target"
    before = tree(tmp_path)
    with pytest.raises(IntegrityError, match="refusing|listed twice") as caught:
        snaps.restore(1, target)
    assert repr(path) in str(caught.value) and reason in str(caught.value)
    assert tree(tmp_path) == before and not target.exists()  # nothing written, anywhere
    assert not Path("/tmp/evil.txt").exists()
    assert snaps.latest() is None  # an invalid manifest does not count as complete
    assert reason in snaps.verify(1)[0]


def test_restore_refuses_symlink_escape(any_store, source, tmp_path):
    snaps = Snapshots(any_store, PREFIX)
    snaps.commit(source)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "optim").symlink_to(outside, target_is_directory=True)
    with pytest.raises(IntegrityError, match="'optim/deep/nested/rng.json'.*outside"):
        snaps.restore(1, target)
    assert list(outside.iterdir()) == []
    assert [p.name for p in target.iterdir()] == ["optim"]


def test_restore_refuses_a_file_whose_hash_does_not_match(any_store, source, tmp_path):
    counting = CountingStore(any_store)
    snaps = Snapshots(counting, PREFIX)
    info = snaps.commit(source)
    model = PREFIX + "00000001/model.pt"
    good = any_store.read(model).data
    any_store.write(model, good[:-1] + bytes([good[-1] ^ 0xFF]))
    target = tmp_path / "target"
    expected = next(f.sha256 for f in info.files if f.path == "model.pt")
    with pytest.raises(IntegrityError, match=rf"model.pt of snapshot 1 does not match its manifest: sha256 expected {expected}, got [0-9a-f]{{64}}"):
        snaps.restore(1, target)
    # No file was put in place and no temporary file is left (the folders may remain).
    assert tree(target) == {}
    assert not (tmp_path / "model.pt").exists()

    any_store.write(model, good + b"!")
    with pytest.raises(IntegrityError, match="size expected 300000, got 300001"):
        snaps.restore(1, target)
    assert tree(target) == {}


def test_restore_keeps_identical_local_files_and_extras(any_store, source, tmp_path):
    counting = CountingStore(any_store)
    snaps = Snapshots(counting, PREFIX)
    snaps.commit(source)
    target = tmp_path / "target"
    snaps.restore(1, target)
    assert len(counting.downloads) == 4

    counting.downloads.clear()
    write(target, "model.pt", b"changed locally")
    write(target, "mine.txt", b"not in the snapshot")
    seen = []
    snaps.restore(1, target, progress=seen.append)
    assert counting.downloads == [PREFIX + "00000001/model.pt"]
    assert sum(seen) == snaps.get(1).total_bytes
    assert (target / "mine.txt").read_bytes() == b"not in the snapshot"
    assert {k: v for k, v in tree(target).items() if k != "mine.txt"} == tree(source)


def test_file_changed_during_upload_fails_the_commit(any_store, source):
    def scribble(path, key):
        if key.endswith("model.pt"):
            with open(path, "ab") as f:
                f.write(b"more")

    snaps = Snapshots(CountingStore(any_store, on_upload=scribble), PREFIX)
    with pytest.raises(StoreError, match="model.pt changed while being snapshotted"):
        snaps.commit(source)
    assert snaps.latest() is None
    assert not any_store.exists(manifest_key(PREFIX, 1))

    info = Snapshots(any_store, PREFIX).commit(source)  # the retry works, at the next seq
    assert info.seq == 2 and Snapshots(any_store, PREFIX).verify(2) == []


def around_transfer(monkeypatch, rel, *, before=None, after=None):
    """Run ``before``/``after`` on the local file ``rel`` around its real transfer into the
    snapshot (uploaded or copied, checked against its entry)."""
    real = SnapshotFileWriter._transfer

    def transfer(writer, t):
        path = writer._local[t.entry.path].path if t.entry.path in writer._local else None
        if t.entry.path == rel and before:
            before(path)
        done = real(writer, t)
        if t.entry.path == rel and after:
            after(path)
        return done

    monkeypatch.setattr(SnapshotFileWriter, "_transfer", transfer)


def test_a_file_deleted_once_uploaded_stays_in_the_snapshot(any_store, source, tmp_path, monkeypatch):
    # A script that keeps its last few checkpoints deletes the oldest while a snapshot is
    # under way: the snapshot is the folder as scanned, not a failure.
    scanned = tree(source)
    around_transfer(monkeypatch, "optim/state.bin", after=Path.unlink)
    info = Snapshots(any_store, PREFIX).commit(source)
    assert not (source / "optim/state.bin").exists()
    assert info.seq == 1 and Snapshots(any_store, PREFIX).latest().seq == 1
    assert Snapshots(any_store, PREFIX).verify(1) == []
    Snapshots(any_store, PREFIX).restore(1, tmp_path / "back")
    assert tree(tmp_path / "back") == scanned


def test_a_file_deleted_once_copied_stays_in_the_snapshot(any_store, source, tmp_path, monkeypatch):
    snaps = Snapshots(any_store, PREFIX)
    snaps.commit(source)
    write(source, "model.pt", b"step 2")
    scanned = tree(source)
    around_transfer(monkeypatch, "optim/state.bin", after=Path.unlink)  # copied from snapshot 1
    assert Snapshots(any_store, PREFIX).commit(source).seq == 2
    Snapshots(any_store, PREFIX).restore(2, tmp_path / "back")
    assert tree(tmp_path / "back") == scanned


def test_a_file_deleted_before_it_is_read_fails_the_commit(any_store, source, monkeypatch):
    snaps = Snapshots(any_store, PREFIX)
    snaps.commit(source)
    write(source, "model.pt", b"step 2")
    around_transfer(monkeypatch, "model.pt", before=Path.unlink)
    with pytest.raises(StoreError, match="model.pt vanished while being snapshotted"):
        Snapshots(any_store, PREFIX).commit(source)
    assert Snapshots(any_store, PREFIX).latest().seq == 1


def test_a_file_changed_once_uploaded_fails_the_commit(any_store, source, monkeypatch):
    def scribble(path):
        with open(path, "ab") as f:
            f.write(b"more")

    around_transfer(monkeypatch, "optim/state.bin", after=scribble)
    with pytest.raises(StoreError, match="state.bin changed while being snapshotted"):
        Snapshots(any_store, PREFIX).commit(source)
    assert Snapshots(any_store, PREFIX).latest() is None


def test_a_file_replaced_before_its_upload_then_deleted_fails_the_commit(any_store, source, monkeypatch):
    # The upload read another version (a new file at the path): its object is not the
    # scanned content, so the deletion that follows still fails the snapshot.
    def replace(path):
        other = path.with_name("other")
        other.write_bytes(b"another version")
        os.replace(other, path)

    around_transfer(monkeypatch, "model.pt", before=replace, after=Path.unlink)
    with pytest.raises(StoreError):
        Snapshots(any_store, PREFIX).commit(source)
    assert Snapshots(any_store, PREFIX).latest() is None


def test_a_file_deleted_right_after_its_upload_fails_the_commit(any_store, source):
    # Gone before it could be seen unchanged after its upload (here a forwarding wrapper
    # deletes it): what was read is not known to be the scanned version.
    snaps = Snapshots(CountingStore(any_store, on_upload=lambda path, key: key.endswith("model.pt")
                                    and Path(path).unlink()), PREFIX)
    with pytest.raises(StoreError, match="model.pt vanished while being snapshotted"):
        snaps.commit(source)
    assert Snapshots(any_store, PREFIX).latest() is None


def test_second_writer_cannot_claim_the_same_seq(any_store, source):
    def race(path, key):
        if key.endswith("/model.pt"):  # another writer completes seq 1 first
            any_store.write(manifest_key(PREFIX, 1), b'{"format": "runctl.manifest/1", "seq": 1, "files": []}',
                            if_none_match=True)

    snaps = Snapshots(CountingStore(any_store, on_upload=race), PREFIX)
    with pytest.raises(PreconditionFailed, match="another writer committed snapshot 1"):
        snaps.commit(source)


def test_hash_cache_and_pending_bytes(any_store, source, monkeypatch):
    for path in source.rglob("*"):
        if path.is_file():
            then = time.time() - 60
            os.utime(path, (then, then))
    calls = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p: calls.append(Path(p).name) or real(p))
    snaps = Snapshots(any_store, PREFIX)
    snaps.commit(source)
    assert len(calls) == 4
    assert snaps.pending_bytes(source) == 0

    calls.clear()
    write(source, "model.pt", os.urandom(1000), age_s=30)
    assert snaps.pending_bytes(source) == 1000
    assert snaps.commit(source).seq == 2
    assert calls == ["model.pt"]  # the unchanged files were not read again
    assert snaps.pending_bytes(source) == 0
    write(source, "model.pt", os.urandom(10))  # fresh mtime: never trusted from the cache
    assert snaps.pending_bytes(source) == 10


def test_pending_bytes_count_nothing_a_retained_snapshot_holds(any_store, source, tmp_path):
    for path in source.rglob("*"):
        if path.is_file():  # old enough for the hash cache
            os.utime(path, (time.time() - 60, time.time() - 60))
    snaps = Snapshots(any_store, PREFIX)
    snaps.commit(source)
    write(source, "model.pt", os.urandom(1000), age_s=30)
    snaps.commit(source)
    snaps.restore(1, source)  # model.pt back to snapshot 1's content, its hash known
    assert snaps.pending_bytes(source) == 0  # a commit copies it from snapshot 1
