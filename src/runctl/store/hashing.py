"""The local side of snapshots: finding the files of a checkpoint folder and hashing them.

``HashCache`` remembers each file's sha256 under its (size, mtime_ns, inode), so that a
large unchanged file is not read again at every periodic sync; given a file, it also keeps
them across processes (``runctl.store.hash_file``), trusted there only while the ctime holds
too. A file modified within the last ``RECENT_NS`` of hashing is not cached (its timestamp
may not yet tell a later write of the same size apart: git's "racy clean" problem).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from runctl.errors import NotFoundError, StoreError, UsageError
from runctl.fsutil import TEMP_MARKER
from runctl.store.hash_file import Entry, load_hashes, save_hashes
from runctl.store.manifest import MANIFEST_NAME, path_problem

log = logging.getLogger(__name__)

RECENT_NS = 2_000_000_000
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileState:
    """What identifies a version of a local file without reading it."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileState:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class SourceFile:
    rel: str  # '/'-separated path inside the checkpoint folder
    path: Path
    state: FileState


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        if hasattr(hashlib, "file_digest"):  # Python 3.11+
            return hashlib.file_digest(f, "sha256").hexdigest()
        digest = hashlib.sha256()
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
        return digest.hexdigest()


class HashCache:
    """sha256 of local files, remembered per path while (size, mtime_ns, inode) holds.

    ``file``: where the hashes are kept across processes (see ``runctl.store.hash_file``):
    read on the first lookup that misses, written by ``save``. A hash from the file is used
    only when the file's size, mtime_ns, inode and ctime_ns all hold (one stat, no read).
    """

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns, *, file: Path | None = None) -> None:
        # abs path -> (state, sha256, ctime_ns or None where not known: then not saved)
        self._entries: dict[str, tuple[FileState, str, int | None]] = {}
        self._lock = threading.Lock()
        self._clock_ns = clock_ns
        self._file = Path(file) if file is not None else None
        self._stored: dict[str, Entry] | None = None  # the file's entries, once read
        self._dirty = False

    def lookup(self, path: Path, state: FileState) -> str | None:
        key = os.path.abspath(path)
        with self._lock:
            hit = self._entries.get(key)
        if hit and hit[0] == state:
            return hit[1]
        return self._lookup_stored(key, state) if self._file is not None else None

    def _lookup_stored(self, key: str, state: FileState) -> str | None:
        with self._lock:
            if self._stored is None:
                self._stored = load_hashes(self._file)
            hit = self._stored.get(key)
        if hit is None or hit[:3] != (state.size, state.mtime_ns, state.inode):
            return None
        try:
            st = os.stat(key)
        except OSError:
            return None
        if FileState.of(st) != state or st.st_ctime_ns != hit[3]:
            return None
        with self._lock:
            self._entries[key] = (state, hit[4], hit[3])
        return hit[4]

    def remember(self, path: Path, state: FileState, digest: str, *, recent_ok: bool = False,
                 ctime_ns: int | None = None) -> None:
        """Cache a hash. Unless ``recent_ok``, a file modified in the last RECENT_NS is not
        cached: a write of the same size in the same timestamp tick would go unseen.
        ``ctime_ns``: the file's ctime when it had ``state``; only such entries are saved."""
        if not recent_ok and self._clock_ns() - state.mtime_ns < RECENT_NS:
            return
        with self._lock:
            self._entries[os.path.abspath(path)] = (state, digest, ctime_ns)
            self._dirty = self._dirty or (ctime_ns is not None and self._file is not None)

    def save(self) -> None:
        """Write the hashes to the cache file, if one was given and anything changed."""
        if self._file is None or not self._dirty:
            return
        with self._lock:
            stored = dict(self._stored or load_hashes(self._file))
            for key, (state, digest, ctime_ns) in self._entries.items():
                if ctime_ns is not None:
                    stored[key] = (state.size, state.mtime_ns, state.inode, ctime_ns, digest)
            self._stored, self._dirty = stored, False
        save_hashes(self._file, sorted(stored.items()))

    def digest(self, path: Path, state: FileState) -> str:
        """The file's sha256, from the cache when its state is unchanged.

        Raises StoreError when the file changed while it was read (the hash would describe
        neither version).
        """
        cached = self.lookup(path, state)
        if cached is not None:
            return cached
        try:
            digest = sha256_file(path)
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise StoreError(f"{path} vanished while being snapshotted") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
        if FileState.of(st) != state:
            raise StoreError(f"{path} changed while being snapshotted")
        self.remember(path, state, digest, ctime_ns=st.st_ctime_ns)
        return digest

    def forget_missing(self, under: Path, keep: Iterable[Path]) -> None:
        """Drop entries of files below ``under`` that are not in ``keep`` (so the cache
        holds no more than the live files of the folders it has seen)."""
        base = os.path.abspath(under).rstrip(os.sep) + os.sep
        live = {os.path.abspath(p) for p in keep}
        with self._lock:
            for key in [k for k in self._entries if k.startswith(base) and k not in live]:
                del self._entries[key]
            for key in [k for k in self._stored or () if k.startswith(base) and k not in live]:
                del self._stored[key]
                self._dirty = True


def _skip_reason(rel: str) -> str | None:
    if rel == MANIFEST_NAME:
        return f"{MANIFEST_NAME} is reserved for the snapshot's manifest"
    problem = path_problem(rel)
    return f"its name {problem}" if problem else None


def scan_source(source: Path, files: Iterable[str] | None = None) -> list[SourceFile]:
    """The regular files to snapshot under ``source``, sorted by path.

    ``files`` None: every regular file below ``source``, recursively. Symlinks (to files or
    folders) are skipped with a warning, as are our temporary files and names a snapshot
    cannot hold. ``files`` given: exactly those relative paths (NotFoundError when missing).
    """
    source = Path(source)
    if not source.is_dir():
        raise NotFoundError(f"checkpoint folder {source} does not exist")
    found: list[SourceFile] = []
    if files is None:
        for dirpath, dirnames, filenames in os.walk(source):
            rel_dir = os.path.relpath(dirpath, source)
            for name in sorted(dirnames):
                if os.path.islink(os.path.join(dirpath, name)):
                    log.warning("not snapshotting %s: a symlink to a folder", os.path.join(dirpath, name))
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                _add(found, source, rel)
    else:
        seen = set()
        for given in files:
            rel = posixpath.normpath(str(given).replace(os.sep, "/"))
            if rel in seen:
                continue
            seen.add(rel)
            if rel.startswith("../") or rel in ("..", ".") or rel.startswith("/"):
                raise UsageError(f"{given!r} is not a path inside the checkpoint folder {source}")
            _add(found, source, rel, explicit=True)
    return sorted(found, key=lambda f: f.rel)


def _add(found: list[SourceFile], source: Path, rel: str, *, explicit: bool = False) -> bool:
    path = source / rel
    if TEMP_MARKER in rel.rsplit("/", 1)[-1]:
        return False  # ours or the store's, never part of a checkpoint
    reason = _skip_reason(rel)
    if reason:
        log.warning("not snapshotting %s: %s", path, reason)
        return False
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        if explicit:
            raise NotFoundError(f"{path} does not exist (it was to be snapshotted)") from exc
        return False  # deleted while we walked
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode):
        log.warning("not snapshotting %s: a symlink", path)
        return False
    if not stat.S_ISREG(st.st_mode):
        log.warning("not snapshotting %s: not a regular file", path)
        return False
    if explicit and "/" in rel and os.path.realpath(path.parent) != os.path.join(os.path.realpath(source), os.path.dirname(rel)):
        log.warning("not snapshotting %s: it lies behind a symlinked folder", path)
        return False
    found.append(SourceFile(rel, path, FileState.of(st)))
    return True
