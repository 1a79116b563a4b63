"""CheckpointSync: only stable files are captured; new files at once, rewrites as they settle (uploads
within their share of the time), everything at the end. A fake snapshots object and an injected clock."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runctl.agent.sync import CheckpointSync, committed_state, newest_entry, rewrite_due, scan_folder
from runctl.errors import StoreError
from runctl.models import CheckpointInfo, FileEntry

from clocks import Clock

T0 = 1_800_000_000.0


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
    return Clock(T0)


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
    committed = committed_state(snapshot_of(folder), scan_folder(folder))  # restored from the store
    sync, snaps, _ = make_sync(folder, clock, committed=committed)
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


# -- the baseline is the store, not what the folder held at the first look -------------------

def snapshot_of(folder: Path, seq: int = 1) -> CheckpointInfo:
    """A manifest holding every file of ``folder`` as it is now (as a restore leaves it)."""
    files = tuple(FileEntry(rel, size, "0" * 64) for rel, (size, _mtime) in sorted(scan_folder(folder).items()))
    return CheckpointInfo(seq, "2027-01-01T00:00:00.000Z", files, f"mem://{seq}")


def test_a_checkpoint_written_before_the_first_look_is_committed(folder, clock):
    # The script saved at once, before the sync first scanned: the store does not hold it.
    put(folder, "ckpt-0.pt", b"saved at start", clock)
    sync, snaps, seen = make_sync(folder, clock)
    assert settle(sync, 3) is not None
    assert snaps.commits == [{"ckpt-0.pt": b"saved at start"}] and len(seen) == 1


def test_a_checkpoint_written_before_the_first_look_is_committed_by_final(folder, clock):
    put(folder, "ckpt-0.pt", b"saved at start", clock, age=0.0)
    sync, snaps, _ = make_sync(folder, clock)
    result = sync.final()
    assert result is not None and result.snapshot.seq == 1
    assert snaps.commits == [{"ckpt-0.pt": b"saved at start"}]


def test_committed_state_trusts_only_files_as_restored(folder, clock):
    put(folder, "same.pt", b"restored", clock)
    put(folder, "regrown.pt", b"old", clock)
    put(folder, "gone.pt", b"here", clock)
    restored = snapshot_of(folder)
    (folder / "gone.pt").unlink()
    put(folder, "regrown.pt", b"longer now", clock)  # another size than the manifest's
    put(folder, "stray.pt", b"not in the store", clock)
    state = committed_state(restored, scan_folder(folder))
    assert state["same.pt"] == scan_folder(folder)["same.pt"]
    assert state["regrown.pt"] != scan_folder(folder)["regrown.pt"]
    assert "gone.pt" in state and "stray.pt" not in state
    assert committed_state(None, scan_folder(folder)) == {}


def test_a_restored_file_rewritten_by_the_script_is_committed(folder, clock):
    put(folder, "last.pt", b"v1", clock, age=20.0)
    committed = committed_state(snapshot_of(folder), scan_folder(folder))
    sync, snaps, _ = make_sync(folder, clock, committed=committed)
    assert settle(sync, 3) is None  # as restored: nothing to do
    put(folder, "last.pt", b"v2", clock, age=5.0)  # same size, newer: the script saved again
    assert sync.final() is not None
    assert snaps.commits == [{"last.pt": b"v2"}]


# -- the final snapshot is retried, and its failure is never silent ---------------------------

class Sleeps(list):
    """An injected sleep: records each pause and moves the clock on by it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.clock.advance(seconds)


def test_a_failing_final_snapshot_is_retried_with_backoff(folder, clock):
    errors: list[Exception] = []
    snaps = FakeSnapshots()
    snaps.fail_next = 2
    sleeps = Sleeps(clock)
    sync, _, _ = make_sync(folder, clock, snaps=snaps, on_error=errors.append, sleep=sleeps)
    put(folder, "final.pt", b"f", clock, age=0.0)
    result = sync.final()
    assert result is not None and snaps.commits == [{"final.pt": b"f"}]
    assert len(errors) == 2 and len(sleeps) == 2 and sleeps[1] > sleeps[0] > 0


def test_a_final_snapshot_that_keeps_failing_raises(folder, clock):
    snaps = FakeSnapshots()
    snaps.fail_next = 100
    sleeps = Sleeps(clock)
    sync, _, seen = make_sync(folder, clock, snaps=snaps, sleep=sleeps)
    put(folder, "final.pt", b"f", clock, age=0.0)
    with pytest.raises(StoreError, match="the store is down"):
        sync.final()
    assert snaps.commits == [] and seen == []
    assert 1 <= len(sleeps) <= 5 and sum(sleeps) < 30  # bounded
    assert 100 - snaps.fail_next == len(sleeps) + 1


def test_a_prune_that_fails_does_not_undo_a_durable_final_snapshot(folder, clock):
    snaps = FakeSnapshots()

    def prune(keep_last_n):
        raise StoreError("cannot delete an old snapshot")

    snaps.prune = prune
    sync, _, _ = make_sync(folder, clock, snaps=snaps, sleep=Sleeps(clock))
    put(folder, "final.pt", b"f", clock, age=0.0)
    result = sync.final()
    assert result is not None and snaps.commits == [{"final.pt": b"f"}]


def test_final_retries_never_sleep_past_the_deadline(folder, clock):
    snaps = FakeSnapshots()
    snaps.fail_next = 100
    sleeps = Sleeps(clock)
    sync, _, _ = make_sync(folder, clock, snaps=snaps, sleep=sleeps)
    put(folder, "final.pt", b"f", clock, age=0.0)
    deadline = clock.now + 1.2
    with pytest.raises(StoreError):
        sync.final(deadline=deadline)
    assert clock.now <= deadline


# -- rewrites in place: uploaded as they settle, within max_upload_share of the time ----------

class TimedSnapshots(FakeSnapshots):
    """Each commit takes ``seconds`` on the injected clock; records when each began and ended."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds
        self.spans: list[tuple[float, float]] = []

    def commit(self, source, **kwargs):
        began = self.clock.now
        self.clock.advance(self.seconds)
        self.spans.append((began, self.clock.now))
        return super().commit(source, **kwargs)


def test_rewrite_due():
    assert rewrite_due(100.0, 2.0, 0.0, 0.25) == 106.0  # began at 98: next at 98 + 2 / 0.25
    assert rewrite_due(100.0, 2.0, 30.0, 0.25) == 130.0  # the floor, when longer
    assert rewrite_due(100.0, 2.0, 0.0, 1.0) == 100.0  # a share of 1: uploads back to back


def rewrite_every(sync, folder, clock, period: float, count: int, steps: int = 100):
    """The script rewrites last.pt every ``period`` s (its step inside); the sync ticks every 0.5 s."""
    for n in range(1, count + 1):
        written = clock.now
        put(folder, "last.pt", f"step {n * steps}".encode(), clock, age=0.0)
        while clock.now < written + period:
            sync.tick()
            clock.advance(0.5)


def test_a_rewrite_is_uploaded_as_soon_as_it_settles(folder, clock):
    snaps = TimedSnapshots(clock, seconds=0.5)  # uploads take 10% of a 5 s rewrite period
    sync, _, seen = make_sync(folder, clock, snaps=snaps, sync_interval=0.0, max_upload_share=0.25)
    rewrite_every(sync, folder, clock, period=5.0, count=6)
    assert [c["last.pt"] for c in snaps.commits] == [f"step {n * 100}".encode() for n in range(1, 7)]
    assert len(seen) == 6
    # Each began once the file had been quiet for the quiet period, well before the next rewrite.
    assert all(began % 5.0 < 5.0 - 0.5 for began, _ in snaps.spans)


def test_rewrites_faster_than_their_uploads_get_at_most_their_share_of_the_time(folder, clock):
    snaps = TimedSnapshots(clock, seconds=3.0)  # uploads would take 60% of a 5 s rewrite period
    sync, _, _ = make_sync(folder, clock, snaps=snaps, sync_interval=0.0, max_upload_share=0.25)
    start = clock.now
    rewrite_every(sync, folder, clock, period=5.0, count=24)
    starts = [began for began, _ in snaps.spans]
    assert 3 <= len(starts) < 24  # not every rewrite, but some
    assert all(b - a >= 3.0 / 0.25 for a, b in zip(starts, starts[1:]))  # upload time <= 25%
    assert len(starts) * 3.0 <= 0.25 * (clock.now - start) + 3.0
    # What was uploaded is always a whole version the script wrote, never a mix.
    assert all(c["last.pt"].startswith(b"step ") for c in snaps.commits)


def test_a_larger_share_uploads_more_rewrites(folder, clock, tmp_path):
    counts = []
    for share in (0.25, 1.0):
        clock.now = T0
        path = tmp_path / f"share-{share}"
        path.mkdir()
        snaps = TimedSnapshots(clock, seconds=3.0)
        sync, _, _ = make_sync(path, clock, snaps=snaps, sync_interval=0.0, max_upload_share=share)
        rewrite_every(sync, path, clock, period=5.0, count=12)
        counts.append(len(snaps.commits))
    assert counts[0] < counts[1] == 12


def test_max_upload_share_must_be_a_share():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="max_upload_share"):
            CheckpointSync(FakeSnapshots(), Path("."), sync_interval=0.0, keep_last_n=1, max_upload_share=bad)


# -- the step recorded is the step of the checkpoint held, not the step at upload time -----------

def test_a_snapshot_records_the_step_its_newest_file_was_saved_at(folder, clock):
    saved_at: dict[float, int] = {}  # mtime -> step, as the script reported them
    sync, snaps, _ = make_sync(folder, clock, sync_interval=0.0, metadata=lambda: {"attempt": 0, "step": 999},
                               step_of=lambda rel, mtime: saved_at.get(mtime))
    path = put(folder, "last.pt", b"step 100", clock, age=3.0)
    saved_at[path.stat().st_mtime_ns / 1e9] = 100
    assert settle(sync) is not None
    assert snaps.metadata[-1] == {"newest": "last.pt", "attempt": 0, "step": 100}  # not 999, the step now
    clock.advance(5)
    old = put(folder, "best.pt", b"step 100 best", clock, age=2.0)
    saved_at[old.stat().st_mtime_ns / 1e9] = 100
    new = put(folder, "last.pt", b"step 200", clock, age=0.0)  # still moving: carried as the store has it
    saved_at[new.stat().st_mtime_ns / 1e9] = 200
    assert settle(sync) is not None
    assert snaps.commits[-1] == {"best.pt": b"step 100 best", "last.pt": b"step 100"}
    assert snaps.metadata[-1]["step"] == 100  # the carried last.pt still holds step 100
    clock.advance(2)
    assert settle(sync) is not None
    assert snaps.commits[-1]["last.pt"] == b"step 200" and snaps.metadata[-1]["step"] == 200


def test_a_restored_checkpoint_keeps_the_step_of_its_snapshot(folder, clock):
    put(folder, "last.pt", b"step 300", clock, age=20.0)
    put(folder, "notes.txt", b"a", clock, age=30.0)
    committed = committed_state(snapshot_of(folder), scan_folder(folder))
    sync, snaps, _ = make_sync(folder, clock, committed=committed, restored_step=300,
                               step_of=lambda rel, mtime: None)
    put(folder, "notes.txt", b"ab", clock, age=25.0)  # an older file changed; last.pt is as restored
    assert sync.final() is not None
    assert snaps.metadata[-1]["step"] == 300


def test_a_version_about_to_be_rewritten_is_skipped_for_the_next(folder, clock):
    # Uploads take 2 s, rewrites come every 5 s whatever the agent does, and a floor of 5.5 s
    # between uploads puts the due time of some versions late in their life: an upload begun
    # then would still run when the script rewrites the file (the store refuses such a
    # snapshot, after spending the upload's time). Such a version is skipped for the next one.
    snaps = TimedSnapshots(clock, seconds=2.0)
    sync, _, _ = make_sync(folder, clock, snaps=snaps, sync_interval=5.5, max_upload_share=1.0)
    writes = [T0 + 5.0 * n for n in range(12)]
    done = 0
    while clock.now < writes[-1] + 5.0:
        while done < len(writes) and writes[done] <= clock.now:
            put(folder, "last.pt", f"step {(done + 1) * 100}".encode(), clock, age=clock.now - writes[done])
            done += 1
        sync.tick()
        clock.advance(0.5)
    assert len(snaps.spans) >= 4
    # No upload ran across a rewrite.
    assert not [(b, e) for b, e in snaps.spans for w in writes if b < w < e], (snaps.spans, writes)


def test_the_last_version_is_uploaded_once_rewrites_stop(folder, clock):
    snaps = TimedSnapshots(clock, seconds=3.0)
    sync, _, _ = make_sync(folder, clock, snaps=snaps, sync_interval=0.0, max_upload_share=1.0)
    rewrite_every(sync, folder, clock, period=5.0, count=4)
    for _ in range(30):  # no more rewrites: 15 s
        sync.tick()
        clock.advance(0.5)
    assert snaps.commits[-1]["last.pt"] == b"step 400"
