"""CheckpointSync: only stable files are captured; new files at once, rewrites at the
interval, everything at the end. A fake snapshots object and an injected clock."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runctl.agent.sync import CheckpointSync, newest_entry, scan_folder
from runctl.errors import StoreError
from runctl.models import CheckpointInfo, FileEntry

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSnapshots:
    """Records what each commit captured (path -> bytes, read at commit time)."""

    def __init__(self) -> None:
        self.commits: list[dict[str, bytes]] = []
        self.metadata: list[dict] = []
        self.pruned: list[int] = []
        self.fail_next = 0

    def commit(self, source: Path, *, files=None, carry=(), metadata=None, progress=None, fence=None):
        if self.fail_next:
            self.fail_next -= 1
            raise StoreError("the store is down")
        captured = {rel: (source / rel).read_bytes() for rel in files}
        last = self.commits[-1] if self.commits else {}
        captured.update({rel: last[rel] for rel in carry if rel in last})  # as the latest holds them
        if self.commits and captured == self.commits[-1]:
            return self._info(len(self.commits))  # unchanged: the latest, as Snapshots does
        self.commits.append(captured)
        self.metadata.append(dict(metadata or {}))
        return self._info(len(self.commits))

    def _info(self, seq: int) -> CheckpointInfo:
        files = tuple(FileEntry(rel, len(data), "0" * 64) for rel, data in sorted(self.commits[seq - 1].items()))
        return CheckpointInfo(seq, "2027-01-01T00:00:00.000Z", files, f"mem://{seq}")

    def pending_bytes(self, source: Path, files=None) -> int:
        return sum((source / rel).stat().st_size for rel in (files or []))

    def prune(self, keep_last_n: int):
        self.pruned.append(keep_last_n)
        return []


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    return path


def put(folder: Path, rel: str, data: bytes, clock: Clock, age: float = 10.0) -> Path:
    """Write ``rel`` with a modification time ``age`` seconds before the clock's now."""
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    mtime = clock.now - age
    os.utime(path, (mtime, mtime))
    return path


def make_sync(folder, clock, snaps=None, **kwargs) -> tuple[CheckpointSync, FakeSnapshots, list]:
    snaps = snaps or FakeSnapshots()
    seen: list = []
    kwargs.setdefault("sync_interval", 30.0)
    kwargs.setdefault("keep_last_n", 4)
    sync = CheckpointSync(snaps, folder, quiet_period=1.0, clock=clock, on_snapshot=seen.append, **kwargs)
    return sync, snaps, seen


def settle(sync: CheckpointSync, ticks: int = 2):
    """Tick as the background loop would; return the last non-None result."""
    result = None
    for _ in range(ticks):
        result = sync.tick() or result
    return result


def test_a_new_stable_file_triggers_a_commit(folder, clock):
    sync, snaps, seen = make_sync(folder, clock, metadata=lambda: {"step": 7})
    assert sync.tick() is None  # nothing there
    put(folder, "ckpt-1.pt", b"one", clock)
    assert sync.tick() is None  # seen once: it must look the same on the next tick too
    result = sync.tick()
    assert result is not None and result.new and result.snapshot.seq == 1
    assert snaps.commits == [{"ckpt-1.pt": b"one"}]
    assert snaps.metadata == [{"newest": "ckpt-1.pt", "step": 7}]
    assert snaps.pruned == [4]
    assert [r.snapshot.seq for r in seen] == [1]
    assert sync.latest.seq == 1
    assert settle(sync, 3) is None  # nothing changed since


def test_a_file_modified_within_the_quiet_period_is_not_captured(folder, clock):
    sync, snaps, _ = make_sync(folder, clock)
    put(folder, "ckpt.pt", b"partial", clock, age=0.2)
    assert settle(sync, 4) is None
    assert snaps.commits == []
    clock.advance(0.5)
    assert settle(sync, 2) is None  # 0.7 s old: still inside the quiet period
    clock.advance(0.5)
    assert settle(sync, 1) is not None  # 1.2 s old and unchanged: stable
    assert snaps.commits == [{"ckpt.pt": b"partial"}]


def test_a_file_open_for_writing_is_not_captured(folder, clock):
    writing: set[str] = set()
    sync, snaps, _ = make_sync(folder, clock, writers=lambda: set(writing))
    path = put(folder, "big.bin", b"x" * 100, clock, age=60.0)  # old mtime, but still open
    writing.add(str(path))
    assert settle(sync, 5) is None
    clock.advance(120)
    assert settle(sync, 2) is None
    assert snaps.commits == []
    writing.clear()  # closed
    assert sync.tick() is not None
    assert snaps.commits == [{"big.bin": b"x" * 100}]


def test_one_unsettled_file_holds_back_the_whole_folder(folder, clock):
    # A checkpoint made of several files is never captured half-written.
    sync, snaps, _ = make_sync(folder, clock)
    put(folder, "step-2/model.bin", b"model", clock, age=5.0)
    put(folder, "step-2/optimizer.bin", b"opt", clock, age=0.1)
    assert settle(sync, 3) is None
    clock.advance(2)
    assert settle(sync, 1) is not None
    assert snaps.commits == [{"step-2/model.bin": b"model", "step-2/optimizer.bin": b"opt"}]
    assert snaps.metadata[0]["newest"] == "step-2"


def test_a_file_that_keeps_changing_is_not_captured(folder, clock):
    sync, snaps, _ = make_sync(folder, clock)
    for n in range(5):
        put(folder, "log.bin", b"x" * (n + 1), clock, age=5.0)  # a new size every tick
        assert sync.tick() is None
    assert snaps.commits == []


def test_rewrites_in_place_wait_for_the_sync_interval(folder, clock):
    sync, snaps, seen = make_sync(folder, clock, sync_interval=30.0)
    put(folder, "last.pt", b"v1", clock)
    assert settle(sync) is not None
    clock.advance(5)
    put(folder, "last.pt", b"v2", clock, age=2.0)
    assert settle(sync, 3) is None  # stable, but only 5 s after the last commit
    clock.advance(20)
    assert settle(sync, 2) is None  # 25 s
    clock.advance(6)
    assert settle(sync, 1) is not None  # 31 s
    assert [c["last.pt"] for c in snaps.commits] == [b"v1", b"v2"]
    assert [r.snapshot.seq for r in seen] == [1, 2]


def test_a_new_file_does_not_wait_for_the_interval(folder, clock):
    sync, snaps, _ = make_sync(folder, clock, sync_interval=3600.0)
    put(folder, "ckpt-1.pt", b"1", clock)
    assert settle(sync) is not None
    clock.advance(3)
    put(folder, "ckpt-2.pt", b"2", clock, age=1.5)
    assert settle(sync) is not None
    assert snaps.commits[-1] == {"ckpt-1.pt": b"1", "ckpt-2.pt": b"2"}
    assert snaps.metadata[-1]["newest"] == "ckpt-2.pt"


def test_temporary_files_are_never_captured(folder, clock):
    sync, snaps, _ = make_sync(folder, clock)
    put(folder, "model.pt", b"m", clock)
    put(folder, ".model.pt.runctl-tmp-123-abcd", b"half", clock)
    put(folder, ".dir.runctl-tmp-9-ffff/inner.bin", b"half", clock)
    assert settle(sync) is not None
    assert snaps.commits == [{"model.pt": b"m"}]
    sync.final()
    assert snaps.commits == [{"model.pt": b"m"}]


def test_final_captures_everything_even_unsettled_and_open_files(folder, clock):
    writing: set[str] = set()
    sync, snaps, seen = make_sync(folder, clock, writers=lambda: set(writing))
    put(folder, "ckpt.pt", b"saved on SIGTERM", clock, age=0.0)
    writing.add(str(put(folder, "events.log", b"still open", clock, age=0.0)))
    assert settle(sync, 3) is None
    result = sync.final()
    assert result is not None and result.new
    assert snaps.commits == [{"ckpt.pt": b"saved on SIGTERM", "events.log": b"still open"}]
    assert [r.snapshot.seq for r in seen] == [1]


def test_final_captures_a_rewrite_inside_the_interval(folder, clock):
    sync, snaps, _ = make_sync(folder, clock, sync_interval=3600.0)
    put(folder, "last.pt", b"v1", clock)
    settle(sync)
    put(folder, "last.pt", b"v2 after SIGTERM", clock, age=0.0)
    assert sync.final() is not None
    assert snaps.commits[-1] == {"last.pt": b"v2 after SIGTERM"}


def test_final_without_changes_commits_nothing(folder, clock):
    put(folder, "restored.pt", b"from the store", clock)
    sync, snaps, _ = make_sync(folder, clock)  # what is there at the start came from the store
    assert settle(sync, 3) is None
    assert sync.final() is None
    assert snaps.commits == []


def test_a_failed_commit_is_reported_and_retried(folder, clock):
    errors: list[Exception] = []
    snaps = FakeSnapshots()
    snaps.fail_next = 1
    sync, _, seen = make_sync(folder, clock, snaps=snaps, on_error=errors.append)
    put(folder, "ckpt.pt", b"c", clock)
    assert settle(sync) is None
    assert len(errors) == 1 and isinstance(errors[0], StoreError)
    assert sync.tick() is not None  # the next tick tries again
    assert snaps.commits == [{"ckpt.pt": b"c"}] and len(seen) == 1


def test_an_unchanged_commit_is_not_announced_again(folder, clock):
    sync, snaps, seen = make_sync(folder, clock, sync_interval=1.0)
    put(folder, "a.pt", b"same", clock)
    settle(sync)
    clock.advance(5)
    put(folder, "a.pt", b"same", clock, age=2.0)  # touched, same content: Snapshots returns the latest
    result = settle(sync)
    assert result is not None and not result.new
    assert len(seen) == 1 and len(snaps.commits) == 1


def test_the_background_loop_commits_and_stops(folder):
    snaps = FakeSnapshots()
    sync = CheckpointSync(snaps, folder, sync_interval=30.0, keep_last_n=2, quiet_period=0.0)
    (folder / "a.pt").write_bytes(b"a")
    sync.start(poll_interval=0.02)
    try:
        for _ in range(200):
            if snaps.commits:
                break
            time.sleep(0.01)
    finally:
        sync.stop()
    assert snaps.commits == [{"a.pt": b"a"}]


def test_scan_and_newest_entry(folder, clock):
    put(folder, "old.pt", b"1", clock, age=100)
    put(folder, "run/new.bin", b"22", clock, age=1)
    os.symlink(folder / "old.pt", folder / "link.pt")
    state = scan_folder(folder)
    assert set(state) == {"old.pt", "run/new.bin"}  # symlinks left out
    assert state["run/new.bin"][0] == 2
    assert newest_entry(folder, state) == "run"
    assert newest_entry(folder, {}) is None


def test_a_file_that_never_settles_does_not_hold_back_a_new_checkpoint(folder, clock):
    sync, snaps, _ = make_sync(folder, clock)
    put(folder, "ckpt-1.pt", b"model", clock, age=30.0)
    for n in range(6):
        put(folder, "events.log", b"x" * (n + 1), clock, age=0.0)  # appended between every two ticks
        sync.tick()
        clock.advance(0.5)
    assert snaps.commits and snaps.commits[-1].get("ckpt-1.pt") == b"model"
