"""Keep the job's checkpoint folder durable in the store while the process runs.

A file is captured only once it is *stable*: no process of the tree holds it open for
writing, and its size and modification time have not moved for ``quiet_period``. A new
stable file triggers a snapshot at once; files rewritten in place are snapshotted at most
every ``sync_interval``. After the process exits, ``final`` captures everything.
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
from runctl.errors import RunctlError
from runctl.fsutil import is_temp_name
from runctl.models import CheckpointInfo

log = logging.getLogger(__name__)

FileState = dict[str, tuple[int, int]]  # relative path -> (size, mtime_ns)


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
        clock: Callable[[], float] = time.time,
        fence: Callable[[], int] | None = None,
    ) -> None:
        self.snapshots = snapshots
        self.folder = folder
        self.sync_interval = sync_interval
        self.keep_last_n = keep_last_n
        self._writers = writers
        self._metadata = metadata
        self._on_snapshot = on_snapshot
        self._on_error = on_error
        self.quiet_period = quiet_period
        self._clock = clock
        self._fence = fence  # proves the lease right before each manifest (Snapshots.commit)
        self._committed: FileState = scan_folder(folder)  # what the store already has
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
        current = scan_folder(self.folder)
        previous, self._previous = self._previous or {}, current
        changed = {rel for rel, st in current.items() if self._committed.get(rel) != st}
        deleted = set(self._committed) - set(current)
        if not changed and not deleted:
            return None
        now = self._clock()
        new_files = changed - set(self._committed)
        if not new_files and not self._asked and now - self._last_commit < self.sync_interval:
            return None  # rewrites in place: wait for the interval
        open_for_writing = self._writers()
        moving = {
            _top(rel) for rel in changed
            if previous.get(rel) != current[rel]
            or now - current[rel][1] / 1e9 < self.quiet_period
            or str(self.folder / rel) in open_for_writing
        }
        # A checkpoint is a top-level entry (a file, or a folder of files): one still being
        # written is held back whole, as the store has it, never captured in part.
        held = {rel for rel in {*current, *self._committed} if _top(rel) in moving}
        if not (changed | deleted) - held:
            return None  # everything that changed is still moving: look again next tick
        self._asked = False
        settled = {rel: st for rel, st in current.items() if rel not in held}
        return self._commit(settled, carry=held)

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

    def final(self) -> SyncResult | None:
        """After the process exited: capture whatever the folder holds now."""
        self.stop()
        current = scan_folder(self.folder)
        if current == self._committed:
            return None
        return self._commit(current)

    def _commit(self, state: FileState, carry: set[str] = frozenset()) -> SyncResult | None:
        with self._lock:
            started = self._clock()
            metadata = {"newest": newest_entry(self.folder, state), **self._metadata()}
            try:
                uploading = self.snapshots.pending_bytes(self.folder, sorted(state))
                info = self.snapshots.commit(self.folder, files=sorted(state), carry=sorted(carry),
                                             metadata=metadata, fence=self._fence)
                if info is not None:
                    self.snapshots.prune(self.keep_last_n)
            except (RunctlError, OSError) as exc:
                log.warning("checkpoint snapshot failed, will retry: %s", exc)
                if self._on_error:
                    self._on_error(exc)
                return None
            # What the store holds now: the settled files, and the old versions carried.
            self._committed = {**{rel: self._committed[rel] for rel in carry if rel in self._committed}, **state}
            self._last_commit = self._clock()
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
