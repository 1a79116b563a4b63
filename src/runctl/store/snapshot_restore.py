"""The restore path of ``Snapshots.restore``: a snapshot's files into a local folder,
each checked against its manifest entry before it is renamed into place.

Every path is checked to land inside the target first (also through a symlink); a file
already there with the right content is kept; the others are downloaded to temporary names
beside their destination, verified, then renamed, so that a failure leaves the folder as it
was.
"""

from __future__ import annotations

import itertools
import os
import stat
import threading
import uuid
from pathlib import Path

from runctl.errors import IntegrityError, NotFoundError, StoreError
from runctl.fsutil import TEMP_MARKER
from runctl.models import CheckpointInfo, FileEntry
from runctl.store.base import ProgressCallback, Store, file_mismatch
from runctl.store.hashing import FileState, HashCache, sha256_file
from runctl.store.snapshot_transfers import checked_downloads_of, parallel, transfers_of


def restore_files(store: Store, info: CheckpointInfo, prefix: str, target: Path, hashes: HashCache, *,
                  workers: int, progress: ProgressCallback | None = None) -> int:
    """Make ``target`` hold the files of ``info``, stored under ``prefix``, verified (see
    ``Snapshots.restore``); the files restored are remembered in ``hashes``. Returns the
    number of files downloaded."""
    resolved: dict[str, str] = {}  # each folder resolved once, not once per file
    checked = [(f, safe_destination(target, f.path, resolved)) for f in info.files]
    target.mkdir(parents=True, exist_ok=True)
    with os.scandir(target) as entries:
        empty = next(entries, None) is None  # then nothing can be there already: no lstat each
    temps: list[Path] = []
    lock = threading.Lock()
    temp_prefix, count = f"{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}-", itertools.count()
    # A folder store checks each file as it copies it (one read), S3 as it downloads it;
    # others are hashed after.
    batch = transfers_of(store)
    checked_download = checked_downloads_of(store)

    def fetch(item: tuple[FileEntry, Path]) -> tuple[FileEntry, Path, Path, FileState] | None:
        f, dest = item
        if not empty and already_there(dest, f, hashes):
            if progress:
                progress(f.size)
            return None
        temp = dest.with_name(f".{dest.name}{temp_prefix}{next(count)}")  # unique, cheaper than a uuid each
        with lock:
            temps.append(temp)
        try:
            if batch is not None:
                try:
                    return f, temp, dest, FileState.of(batch.download(prefix + f.path, temp, progress=progress,
                                                                      expect=f))
                except IntegrityError as exc:
                    raise IntegrityError(f"{f.path} of snapshot {info.seq} does not match its manifest: "
                                         f"{exc}") from exc
            if checked_download is not None:
                try:
                    return f, temp, dest, FileState.of(checked_download(prefix + f.path, temp, expect=f,
                                                                        progress=progress))
                except IntegrityError as exc:
                    raise IntegrityError(f"{f.path} of snapshot {info.seq} does not match its manifest: "
                                         f"{exc}") from exc
            dest.parent.mkdir(parents=True, exist_ok=True)
            store.download(prefix + f.path, temp, progress=progress)
        except NotFoundError as exc:
            raise IntegrityError(f"{f.path} of snapshot {info.seq} is missing from {info.url}") from exc
        problem = file_mismatch(temp, f)
        if problem:
            raise IntegrityError(f"{f.path} of snapshot {info.seq} does not match its manifest: {problem}")
        return f, temp, dest, FileState.of(os.stat(temp))

    try:
        moved = (lambda item: item[0].size) if batch is not None else None
        fetched = [r for r in parallel(fetch, checked, workers, size=moved) if r is not None]
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    for f, temp, dest, state in fetched:
        try:
            os.replace(temp, dest)  # the same inode, size and mtime under its own name
            after = os.stat(dest)  # the ctime the rename gave it, for the cache file
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"cannot restore {dest}: {exc.strerror}") from exc
        # Just verified, and nothing runs in target yet: trust it despite its fresh mtime.
        if FileState.of(after) == state:
            hashes.remember(dest, state, f.sha256, recent_ok=True, ctime_ns=after.st_ctime_ns)
    return len(fetched)


def already_there(dest: Path, f: FileEntry, hashes: HashCache) -> bool:
    """Whether ``dest`` holds ``f`` already (then its hash is remembered in ``hashes``)."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise StoreError(f"cannot restore {f.path}: {dest} is a folder")
    if not stat.S_ISREG(st.st_mode) or st.st_size != f.size:
        return False
    # Read now, never taken from the hash cache: a file changed in place within its
    # timestamp's granularity, or by a tool that put its mtime back, looks unchanged
    # to it. Restores are rare, and reading a file costs less than downloading it.
    try:
        digest = sha256_file(dest)
        unchanged = FileState.of(os.stat(dest)) == FileState.of(st)
    except OSError:
        return False
    if not unchanged or digest != f.sha256:
        return False
    hashes.remember(dest, FileState.of(st), digest, ctime_ns=st.st_ctime_ns)
    return True


def safe_destination(target: Path, rel: str, resolved: dict[str, str] | None = None) -> Path:
    """``target/rel``, after checking that its folder resolves inside ``target``.
    ``resolved``: the real paths found so far (folder -> real path), filled in."""
    resolved = {} if resolved is None else resolved
    root = resolved.get("") or resolved.setdefault("", os.path.realpath(target))
    dest = Path(target, *rel.split("/"))
    folder = rel.rpartition("/")[0]
    parent = resolved.get(folder) or resolved.setdefault(folder, os.path.realpath(dest.parent))
    if parent != root and not parent.startswith(root.rstrip(os.sep) + os.sep):
        raise IntegrityError(f"refusing to restore {rel!r}: it would be written outside {target} "
                             f"(to {parent}, through a symlink)")
    return dest
