"""How a snapshot's files move: worker threads sized by the bytes they move, and the
faster ways a store may offer (a folder's batched transfers, S3's checked uploads and
downloads, a folder's objects read in place), and ``SnapshotFileWriter``, which puts a
snapshot's files in place create-only. Used by ``runctl.store.snapshots`` (commit, verify),
``runctl.store.sharded`` (a machine's part) and ``runctl.store.snapshot_restore``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import unquote, urlparse

from runctl.errors import IntegrityError, NotFoundError, PreconditionFailed, StoreError
from runctl.store.base import ProgressCallback, Store
from runctl.store.hashing import FileState, SourceFile
from runctl.store.manifest import Transfer

log = logging.getLogger(__name__)

#: Bytes to hash or copy per worker thread (see ``parallel``).
PARALLEL_BYTES = 64 << 20


def parallel(fn, items, workers: int, size: Callable[[object], int] | None = None):
    """``[fn(i) for i in items]`` on up to ``workers`` threads; the first error cancels the
    rest and is raised once the running calls have finished.

    ``size``: the bytes an item moves. Threads pay where bytes are hashed or copied (the
    GIL is released meanwhile); for small files they cost more than they save (10,000
    files of 4 KiB on 2 busy cores: a commit took 2.2 s on one thread, 6.1 s on eight),
    so one thread per PARALLEL_BYTES moved, up to ``workers``."""
    items = list(items)
    if size is not None:
        workers = min(workers, 1 + sum(map(size, items)) // PARALLEL_BYTES)
    if len(items) <= 1 or workers == 1:
        return [fn(i) for i in items]
    # Thousands of small files: a task per run of up to 64 items, about four per worker,
    # so that the pool's own cost per task does not outweigh the work.
    run = max(1, min(64, len(items) // (workers * 4)))
    chunks = [items[i:i + run] for i in range(0, len(items), run)]
    with ThreadPoolExecutor(max_workers=min(workers, len(chunks)), thread_name_prefix="runctl-snap") as pool:
        futures = [pool.submit(lambda chunk: [fn(i) for i in chunk], chunk) for chunk in chunks]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return [r for future in futures for r in future.result()]


def transfers_of(store: Store):
    """The store's batched snapshot transfers (``LocalStore.transfers``), or None: looked up
    on its class, so a wrapper that forwards other calls (a test's counting or faulty store)
    is not bypassed."""
    transfers = getattr(type(store), "transfers", None)
    return transfers(store) if callable(transfers) else None


def checked_uploads_of(store: Store):
    """The store's create-only ``upload_checked`` (S3), or None; looked up on its class."""
    method = getattr(type(store), "upload_checked", None)
    return method.__get__(store) if callable(method) else None


def checked_downloads_of(store: Store):
    """The store's ``download_checked`` (S3: a download hashed as it is written, no HEAD), or
    None; looked up on its class, as ``transfers_of``."""
    method = getattr(type(store), "download_checked", None)
    return method.__get__(store) if callable(method) else None


def local_object(store: Store, key: str) -> Path | None:
    """The file behind ``key`` when the store is a local folder, else None."""
    url = store.presign(key) if store.url.startswith("file:") else ""
    return Path(unquote(urlparse(url).path)) if url.startswith("file://") else None


class SnapshotFileWriter:
    """Puts files into one snapshot folder, create-only: each ``Transfer`` uploaded from its
    local file or copied inside the store (checked against its entry). Shared by a whole
    commit (``Snapshots.commit``) and by one machine's part of a sharded round
    (``runctl.store.sharded``).

    ``if_taken(transfer)`` decides what a refused create-only write means (the key holds an
    object another writer put there): it raises to fail the write (a commit: another
    writer claimed the seq) or returns what ``put`` reports for that file (a part: the
    same content is shared, other content is a clash). ``written`` lists the objects this
    writer created, so a refused commit can take them back and never another writer's.

    A file deleted once its object is known to hold the scanned content stays in: the
    snapshot holds the folder as scanned. A script that keeps its last few checkpoints
    deletes the oldest while a snapshot is under way, and failing the snapshot for it
    starved a job of snapshots (seen in CI). Known means copied inside the store checked
    against its entry (sha256), or uploaded and then found unchanged (size, mtime, inode),
    as ``finish`` checks every file. A file changed, or deleted before that, still fails
    the write: its object may hold another version.
    """

    def __init__(self, store: Store, new_prefix: str, seq: int, local: dict[str, SourceFile], *,
                 if_taken: Callable[[Transfer], object], progress: ProgressCallback | None = None) -> None:
        self.store = store
        self.new_prefix = new_prefix
        self.seq = seq
        self.written: list[str] = []
        self._stored: set[str] = set()  # paths whose object is known to hold the scanned content
        self._local = local
        self._if_taken = if_taken
        self._progress = progress
        self._lock = threading.Lock()
        # A folder store writes without a sync per file and makes them durable at once
        # (``finish``) before anything names them; other stores' writes are durable when done.
        self._batch = transfers_of(store)
        self._writer = self._batch or store
        self._checked_upload = checked_uploads_of(store)

    def put(self, plan: list[Transfer], workers: int) -> list:
        """Carry out ``plan``: per transfer, its entry when it was uploaded, None when it was
        copied, or what ``if_taken`` returned. Copies of a file this plan uploads wait for
        the uploads."""
        # A folder store's writes are bound by this machine (threads by bytes moved);
        # a remote store's by round trips (every worker thread).
        moved = (lambda t: t.entry.size) if self._batch is not None else None  # a link may hash its source
        return [*parallel(self._transfer, [t for t in plan if not t.after_uploads], workers, size=moved),
                *parallel(self._transfer, [t for t in plan if t.after_uploads], workers, size=moved)]

    def finish(self) -> None:
        """Check no local file changed while it was put, then make every write durable:
        call before anything (a manifest, a part record) names the files."""
        for item in self._local.values():
            check_unchanged(item, stored=item.rel in self._stored)
        if self._batch is not None:
            self._batch.flush()

    def take_back(self) -> None:
        """Delete the objects this writer created (never another writer's: every write was
        create-only). A failure here only leaves them behind: logged, not raised."""
        try:
            self.store.delete(self.written)
        except StoreError as exc:
            log.warning("snapshot %d: could not delete the %d object(s) of a refused write: %s",
                        self.seq, len(self.written), exc)

    def _transfer(self, t: Transfer):
        key = self.new_prefix + t.entry.path
        try:
            if t.source_key is not None and self._copied(t, key):
                self._created(key, stored=t.entry.path)
                return None
            item = self._local[t.entry.path]
            try:
                if self._batch is not None:  # remembers the object's content: a later copy need not read it
                    self._batch.upload(item.path, key, progress=self._progress, if_none_match=True, expect=t.entry)
                elif self._checked_upload is not None:  # S3: the object carries its sha256 on
                    self._checked_upload(item.path, key, expect=t.entry, progress=self._progress)
                else:
                    self.store.upload(item.path, key, progress=self._progress, if_none_match=True)
            except NotFoundError as exc:
                raise StoreError(f"{item.path} vanished while being snapshotted") from exc
            # Unchanged after the upload: what it read was the scanned version.
            self._created(key, stored=t.entry.path if unchanged(item) else None)
        except PreconditionFailed:
            return self._if_taken(t)
        return t.entry  # every source file's state is checked once, after all transfers (finish)

    def _created(self, key: str, *, stored: str | None) -> None:
        with self._lock:
            self.written.append(key)
            if stored is not None:
                self._stored.add(stored)

    def _copied(self, t: Transfer, key: str) -> bool:
        """Copy ``t``'s content inside the store, checked against its entry. False when the
        source object is bad or gone and the local file (the same content, by its hash) is
        to be uploaded instead: copying would spread the damage into every later snapshot."""
        local = self._local.get(t.entry.path)
        try:
            self._writer.copy(t.source_key, key, expect=t.entry, if_none_match=True)
            return True
        except (IntegrityError, NotFoundError) as exc:
            if local is None:  # a carried file: still being written, nothing local to trust
                raise IntegrityError(f"cannot carry {t.entry.path} into snapshot {self.seq}: {exc}; "
                                     "it is uploaded once it is stable") from exc
            log.warning("snapshot %d: not copying %s: %s; uploading %s instead", self.seq, t.source_key, exc,
                        local.path)
            return False


def unchanged(item: SourceFile) -> bool:
    """Whether the local file is as scanned now (False when it is gone)."""
    try:
        return FileState.of(os.stat(item.path)) == item.state
    except FileNotFoundError:
        return False


def check_unchanged(item: SourceFile, *, stored: bool) -> None:
    """StoreError when the local file changed since it was scanned, or vanished before
    its scanned content was ``stored`` (known to be its object's)."""
    try:
        now = FileState.of(os.stat(item.path))
    except FileNotFoundError as exc:
        if stored:
            log.info("%s was deleted once snapshotted; the snapshot holds it as scanned", item.path)
            return
        raise StoreError(f"{item.path} vanished while being snapshotted") from exc
    if now != item.state:
        raise StoreError(f"{item.path} changed while being snapshotted")
