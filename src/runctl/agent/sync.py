"""Keep the job's checkpoint folder durable in the store while the process runs.

A file is captured only once it is *stable*: no process of the tree holds it open for
writing, and its size and modification time have not moved for ``quiet_period``. A new
stable file triggers a snapshot at once. A file rewritten in place (``last.pt`` saved every
N steps) is snapshotted as soon as it settles too, unless uploads would then take more than
``max_upload_share`` of the time: after an upload that took U seconds, the next snapshot of
rewrites waits until U / max_upload_share seconds after that upload began (``rewrite_due``),
and never less than ``sync_interval`` (0 by default) after it ended. So a script that
rewrites its checkpoint every R seconds has every rewrite uploaded as it settles while
U <= max_upload_share * R, and a share of its rewrites otherwise. A version whose upload
would likely still be running when the script rewrites the file again (its age plus U
reaches the interval between the last two rewrites) is skipped for the next one: the store
would refuse a file that changed while it was uploaded. After the process exits, ``final``
captures everything.

Each snapshot records ``step``: the step the newest file it holds was saved at, as the
script reported it (``step_of``, see ``runctl.agent.steps``), not the step reached by the
time of the upload.

What counts as already in the store is the store's latest manifest (``committed_state``),
never what the folder held when the sync first looked: a script may save a checkpoint
before that first look, and it must still be uploaded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runctl.agent.deadline import ThroughputMeter
from runctl.errors import RunctlError, StoreError
from runctl.fsutil import is_temp_name
from runctl.models import CheckpointInfo

log = logging.getLogger(__name__)

FileState = dict[str, tuple[int, int]]  # relative path -> (size, mtime_ns)

#: The final snapshot is tried this many times in all, the pauses doubling from FINAL_BACKOFF_S
#: (0.5 + 1 + 2 s): enough for a passing store error, short beside a notice's two minutes.
FINAL_TRIES = 4
FINAL_BACKOFF_S = 0.5
_NOT_ON_DISK = -1  # an mtime no file has: the entry differs from whatever the folder holds
#: A rewrite is expected this share of its interval early; one this many intervals late is
#: not coming (the script stopped rewriting the file): its last version is uploaded anyway.
REWRITE_MARGIN = 0.1
OVERDUE = 1.5


def scan_folder(folder: Path) -> FileState:
    """Every regular file below ``folder`` (symlinks and runctl temp files left out)."""
    state: FileState = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not is_temp_name(d)]
        for name in files:
            if is_temp_name(name):
                continue
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not os.path.islink(path):
                state[os.path.relpath(path, folder).replace(os.sep, "/")] = (st.st_size, st.st_mtime_ns)
    return state


def _top(rel: str) -> str:
    return rel.split("/", 1)[0]


def newest_entry(folder: Path, state: FileState) -> str | None:
    """The top-level entry (file or folder) holding the most recently modified file."""
    best: tuple[int, str] | None = None
    for rel, (_size, mtime) in state.items():
        top = _top(rel)
        if best is None or (mtime, top) > best:
            best = (mtime, top)
    return best[1] if best else None


def committed_state(snapshot: CheckpointInfo | None, folder_state: FileState) -> FileState:
    """What the store holds, in the folder's terms, given the folder scanned after the restore
    and before the script starts. Pure.

    A file of ``snapshot`` counts as committed with the size and mtime it has in the folder
    when its size is the manifest's (the restore verified its content); otherwise, and for a
    file of the manifest missing from the folder, with a state no file has, so that the
    folder's version (or its removal) is committed. Files the manifest lacks are not in it.
    """
    if snapshot is None:
        return {}
    state: FileState = {}
    for entry in snapshot.files:
        local = folder_state.get(entry.path)
        state[entry.path] = local if local is not None and local[0] == entry.size else (entry.size, _NOT_ON_DISK)
    return state


def rewrite_due(last_end: float, last_seconds: float, floor: float, share: float) -> float:
    """When files rewritten in place may next be uploaded, after an upload that ended at
    ``last_end`` and took ``last_seconds``: uploads take at most ``share`` of the time, and
    are at least ``floor`` seconds apart. Pure."""
    return last_end + max(floor, last_seconds * (1.0 / share - 1.0))


@dataclass
class SyncResult:
    snapshot: CheckpointInfo
    seconds: float
    new: bool


class CheckpointSync:
    def __init__(
        self,
        snapshots,
        folder: Path,
        *,
        sync_interval: float,
        keep_last_n: int,
        writers: Callable[[], set[str]] = set,
        metadata: Callable[[], dict] = dict,
        on_snapshot: Callable[[SyncResult], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        quiet_period: float = 1.0,
        committed: FileState | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        fence: Callable[[], int] | None = None,
        max_upload_share: float = 0.25,
        step_of: Callable[[str, float], int | None] | None = None,
        restored_step: int | None = None,
        observe: Callable[[], None] | None = None,
        commit: Callable[..., CheckpointInfo | None] | None = None,
        prune: Callable[[int], object] | None = None,
    ) -> None:
        """``committed``: what the store already holds (``committed_state``); None means
        nothing, so every file of the folder is snapshotted (a commit of files the store's
        latest snapshot holds as they are writes nothing).

        ``step_of(rel, mtime)``: the step the file ``rel`` modified at ``mtime`` holds (None:
        unknown); recorded as the snapshot's ``step`` when given. ``restored_step``: the step
        of the files as ``committed`` has them (the restored snapshot's). ``observe``: called
        on every tick, before anything else (the agent reads the script's progress there).
        ``commit``: how a snapshot is made, ``Snapshots.commit``'s signature (default: it; a
        job of several machines commits a sharded round, ``runctl.agent.multinode``), and
        ``prune(keep_last_n)`` how old snapshots go (default: ``Snapshots.prune``; the
        sharded rounds' prune takes their part records too)."""
        self.snapshots = snapshots
        self.folder = folder
        if not 0 < max_upload_share <= 1:
            raise ValueError(f"max_upload_share must be > 0 and <= 1, got {max_upload_share}")
        self.sync_interval = sync_interval
        self.max_upload_share = max_upload_share
        self._step_of = step_of
        self._observe = observe
        self._restored: FileState = dict(committed or {})
        self._restored_step = restored_step
        self._steps: dict[tuple[str, tuple[int, int]], int | None] = {}
        self._last_seconds = 0.0  # how long the last commit took
        self._versions: dict[str, tuple[float, float | None]] = {}  # rel -> (mtime, seconds since the one before)
        self.keep_last_n = keep_last_n
        self._writers = writers
        self._metadata = metadata
        self._on_snapshot = on_snapshot
        self._on_error = on_error
        self.quiet_period = quiet_period
        self._clock = clock
        self._sleep = sleep
        self._fence = fence  # proves the lease right before each manifest (Snapshots.commit)
        self._commit_with = commit or snapshots.commit
        self._prune_with = prune or snapshots.prune
        self._committed: FileState = dict(committed or {})  # what the store already has
        self._last_commit = clock()
        self._previous: FileState | None = None
        self._asked = False
        self._lock = threading.Lock()  # one commit at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latest: CheckpointInfo | None = None
        self.throughput = ThroughputMeter()
        self._last_upload_bytes = 0

    # -- background loop -----------------------------------------------------------
    def start(self, poll_interval: float = 0.5) -> None:
        self._thread = threading.Thread(target=self._loop, args=(poll_interval,), name="checkpoint-sync", daemon=True)
        self._thread.start()

    def _loop(self, poll_interval: float) -> None:
        while not self._stop.wait(poll_interval):
            self.tick()

    def halt(self) -> None:
        """Take no more snapshots, without waiting for one in progress (the agent is stopping
        for its lease: that commit's fence refuses it)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop the loop, waiting for a snapshot in progress to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    # -- decisions ---------------------------------------------------------------------
    def tick(self) -> SyncResult | None:
        """Snapshot now if settled files changed. Returns what was committed.

        Files still moving are carried over as the store already has them, so one file
        that never settles (a log appended every step) does not hold back the others.
        """
        if self._observe is not None:
            try:
                self._observe()
            except Exception:  # advisory: never stop the snapshots
                log.debug("observe failed", exc_info=True)
        current = scan_folder(self.folder)
        previous, self._previous = self._previous or {}, current
        self._learn_rewrites(current)
        changed = {rel for rel, st in current.items() if self._committed.get(rel) != st}
        deleted = set(self._committed) - set(current)
        if not changed and not deleted:
            return None
        now = self._clock()
        new_files = changed - set(self._committed)
        if not new_files and not self._asked and now < self.rewrites_due():
            return None  # rewrites in place: uploads would take more than their share of the time
        open_for_writing = self._writers()
        moving = {
            _top(rel) for rel in changed
            if previous.get(rel) != current[rel]
            or now - current[rel][1] / 1e9 < self.quiet_period
            or str(self.folder / rel) in open_for_writing
            or not self._asked and rel in self._committed and self._rewrite_imminent(rel, current[rel][1] / 1e9, now)
        }
        # A checkpoint is a top-level entry (a file, or a folder of files): one still being
        # written is held back whole, as the store has it, never captured in part.
        held = {rel for rel in {*current, *self._committed} if _top(rel) in moving}
        if not (changed | deleted) - held:
            return None  # everything that changed is still moving: look again next tick
        self._asked = False
        settled = {rel: st for rel, st in current.items() if rel not in held}
        try:
            return self._commit(settled, carry=held)
        except (RunctlError, OSError) as exc:
            self._report(exc)
            return None

    def _learn_rewrites(self, current: FileState) -> None:
        """How often each file is rewritten in place: the time between its last two versions."""
        versions = {}
        for rel, (_size, mtime_ns) in current.items():
            mtime = mtime_ns / 1e9
            seen = self._versions.get(rel)
            versions[rel] = (mtime, None) if seen is None else (mtime, mtime - seen[0]) if mtime > seen[0] else seen
        self._versions = versions

    def _rewrite_imminent(self, rel: str, mtime: float, now: float) -> bool:
        """Whether an upload of this version of ``rel`` begun now would likely still run when
        the script rewrites it next (the store would refuse that snapshot, and its time would
        be lost): then wait for the next version, unless the rewrite is long overdue (the
        script stopped rewriting it)."""
        interval = self._versions.get(rel, (0.0, None))[1]
        if interval is None:
            return False
        next_rewrite = mtime + interval
        return now + self._last_seconds >= next_rewrite - REWRITE_MARGIN * interval and now < mtime + OVERDUE * interval

    def rewrites_due(self) -> float:
        """When files rewritten in place may next be snapshotted (see ``rewrite_due``)."""
        return rewrite_due(self._last_commit, self._last_seconds, self.sync_interval, self.max_upload_share)

    def expected_final_bytes(self) -> int:
        """What the final snapshot will likely upload: what is pending now, or as much as
        the last snapshot uploaded (the script is about to save another checkpoint)."""
        try:
            pending = self.snapshots.pending_bytes(self.folder)
        except (RunctlError, OSError):
            pending = 0
        return max(pending, self._last_upload_bytes)

    def snapshot_soon(self) -> None:
        """Snapshot at the next tick what has settled, without waiting for the interval."""
        self._asked = True

    def final(self, deadline: float | None = None) -> SyncResult | None:
        """After the process exited: make the store hold what the folder holds now.

        Returns the new snapshot, or None when the store already held it (nothing changed
        since the last snapshot, or since the restore). A failing commit is tried
        FINAL_TRIES times in all, the pauses doubling, none reaching ``deadline``
        (the notice's, when there is one); then StoreError: the final state is not durable.
        """
        self.stop()
        pause = FINAL_BACKOFF_S
        for tries in range(1, FINAL_TRIES + 1):
            current = scan_folder(self.folder)  # again on each try: a retry must see the folder as it is
            if current == self._committed:
                return None
            try:
                return self._commit(current)
            except (RunctlError, OSError) as exc:
                error = exc
            out_of_time = deadline is not None and self._clock() + pause >= deadline
            if tries == FINAL_TRIES or out_of_time:
                break
            self._report(error)
            self._sleep(pause)
            pause *= 2
        raise StoreError(f"the final checkpoint snapshot failed after {tries} {'try' if tries == 1 else 'tries'}: "
                         f"{error}") from error

    def _prune(self) -> None:
        # The snapshot is durable already: an old one left behind must not make it look failed.
        try:
            self._prune_with(self.keep_last_n)
        except (RunctlError, OSError) as exc:
            log.warning("could not prune old checkpoint snapshots (next snapshot tries again): %s", exc)

    def _report(self, exc: Exception) -> None:
        """A failed snapshot that will be tried again: told to ``on_error``, else logged."""
        if self._on_error:
            self._on_error(exc)
        else:
            log.warning("checkpoint snapshot failed, will retry: %s", exc)

    def _step_held(self, state: FileState) -> int | None:
        """The step the newest file of ``state`` holds; remembered per file version, so that a
        version carried into later snapshots keeps the step it was first recorded with."""
        if not state:
            return None
        rel = max(state, key=lambda r: (state[r][1], r))
        key = (rel, state[rel])
        if key not in self._steps:
            if self._restored.get(rel) == state[rel]:
                self._steps[key] = self._restored_step
            else:
                try:
                    self._steps[key] = self._step_of(rel, state[rel][1] / 1e9)
                except Exception:  # advisory: an unknown step never stops a snapshot
                    log.debug("step lookup failed", exc_info=True)
                    self._steps[key] = None
        return self._steps[key]

    def _commit(self, state: FileState, carry: set[str] = frozenset()) -> SyncResult | None:
        """Commit ``state`` (and ``carry`` as the store holds it); errors are the caller's."""
        with self._lock:
            started = self._clock()
            metadata = {"newest": newest_entry(self.folder, state), **self._metadata()}
            # What the store will hold: the settled files, and the old versions carried.
            after = {**{rel: self._committed[rel] for rel in carry if rel in self._committed}, **state}
            if self._step_of is not None:
                metadata["step"] = self._step_held(after)
            uploading = self.snapshots.pending_bytes(self.folder, sorted(state))
            info = self._commit_with(self.folder, files=sorted(state), carry=sorted(carry),
                                     metadata=metadata, fence=self._fence)
            if info is not None:
                self._prune()
            self._committed = after
            self._steps = {key: step for key, step in self._steps.items() if after.get(key[0]) == key[1]}
            self._last_commit = self._clock()
            self._last_seconds = self._last_commit - started
            self._last_upload_bytes = uploading
            self.throughput.record(uploading, self._last_commit - started)
            if info is None:
                return None
            is_new = self.latest is None or info.seq != self.latest.seq
            self.latest = info
            result = SyncResult(info, self._clock() - started, is_new)
            if self._on_snapshot and is_new:
                self._on_snapshot(result)
            return result
