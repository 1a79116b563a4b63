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


def newest_entry(folder: Path, state: FileState) -> str | None:
    """The top-level entry (file or folder) holding the most recently modified file."""
    best: tuple[int, str] | None = None
    for rel, (_size, mtime) in state.items():
        top = rel.split("/", 1)[0]
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
        self._committed: FileState = scan_folder(folder)  # what the store already has
        self._last_commit = clock()
        self._previous: FileState | None = None
        self._lock = threading.Lock()  # one commit at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latest: CheckpointInfo | None = None

    # -- background loop -----------------------------------------------------------
    def start(self, poll_interval: float = 0.5) -> None:
        self._thread = threading.Thread(target=self._loop, args=(poll_interval,), name="checkpoint-sync", daemon=True)
        self._thread.start()

    def _loop(self, poll_interval: float) -> None:
        while not self._stop.wait(poll_interval):
            self.tick()

    def stop(self) -> None:
        """Stop the loop, waiting for a snapshot in progress to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    # -- decisions ---------------------------------------------------------------------
    def tick(self) -> SyncResult | None:
        """Snapshot now if the folder changed and has settled. Returns what was committed."""
        current = scan_folder(self.folder)
        previous, self._previous = self._previous, current
        if current == self._committed:
            return None
        now = self._clock()
        new_files = set(current) - set(self._committed)
        if not new_files and now - self._last_commit < self.sync_interval:
            return None  # rewrites in place: wait for the interval
        if current != previous or any(now - mtime / 1e9 < self.quiet_period for _s, mtime in current.values()):
            return None  # still moving: look again next tick
        open_for_writing = self._writers()
        if any(str(self.folder / rel) in open_for_writing for rel in current):
            return None
        return self._commit(current)

    def final(self) -> SyncResult | None:
        """After the process exited: capture whatever the folder holds now."""
        self.stop()
        current = scan_folder(self.folder)
        if current == self._committed:
            return None
        return self._commit(current)

    def _commit(self, state: FileState) -> SyncResult | None:
        with self._lock:
            started = self._clock()
            metadata = {"newest": newest_entry(self.folder, state), **self._metadata()}
            try:
                info = self.snapshots.commit(self.folder, files=sorted(state), metadata=metadata)
                if info is not None:
                    self.snapshots.prune(self.keep_last_n)
            except (RunctlError, OSError) as exc:
                log.warning("checkpoint snapshot failed, will retry: %s", exc)
                if self._on_error:
                    self._on_error(exc)
                return None
            self._committed = state
            self._last_commit = self._clock()
            if info is None:
                return None
            is_new = self.latest is None or info.seq != self.latest.seq
            self.latest = info
            result = SyncResult(info, self._clock() - started, is_new)
            if self._on_snapshot and is_new:
                self._on_snapshot(result)
            return result
