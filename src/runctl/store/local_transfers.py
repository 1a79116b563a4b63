"""Snapshot writes into a ``LocalStore`` without a sync per file (``LocalTransfers``), and
what lets a copy inside the store skip reading an object it knows (``VerifiedObjects``).

A commit of thousands of small files paid two fsyncs per file (the file, its folder) and
read every copied object again to check it. Here the writes stay create-only and atomic,
their durability is batched into one ``flush`` that the commit calls before it writes the
manifest, and a hard link's check reads the object only when this store has not written or
hashed that very inode since its last change.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from runctl.errors import IntegrityError, NotFoundError, PreconditionFailed, StoreError
from runctl.fsutil import TEMP_MARKER, fsync_path
from runctl.models import FileEntry
from runctl.store.base import ProgressCallback, content_mismatch
from runctl.store.hashing import sha256_file

if TYPE_CHECKING:
    from runctl.store.local import LocalStore

#: Files at least this big are fsynced as soon as they are written (in the worker thread
#: that wrote them); smaller ones wait for ``LocalTransfers.flush``.
_SYNC_NOW_BYTES = 1 << 20
#: From this many deferred files on, ``flush`` makes them durable with one syncfs of the
#: store's file system instead of one fsync each (where syncfs exists: Linux).
_SYNCFS_FROM = 32
_VERIFIED_MAX = 1_000_000
_CHUNK = 1 << 20


class VerifiedObjects:
    """The sha256 of store objects this process wrote or hashed, by inode, while the inode's
    (size, mtime_ns, ctime_ns) holds. ctime cannot be set back by a tool (unlike mtime), so a
    change made in place through the file system shows. A hard link changes the ctime: the
    one who links records the new state. Bounded: the oldest entries go first."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int], tuple[int, int, int, str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(st: os.stat_result) -> tuple[tuple[int, int], tuple[int, int, int]]:
        return (st.st_dev, st.st_ino), (st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def lookup(self, st: os.stat_result) -> str | None:
        inode, state = self._key(st)
        with self._lock:
            hit = self._entries.get(inode)
        return hit[3] if hit and hit[:3] == state else None

    def remember(self, st: os.stat_result, sha256: str) -> None:
        inode, state = self._key(st)
        with self._lock:
            self._entries.pop(inode, None)
            self._entries[inode] = (*state, sha256)
            while len(self._entries) > _VERIFIED_MAX:
                del self._entries[next(iter(self._entries))]


def _syncfs(fd: int) -> bool:
    """syncfs(2) on ``fd``'s file system; False where the call does not exist."""
    import ctypes  # here: `runctl --help` need not load it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return False
    if call(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return True


def _copy_fd(src: int, dst: int) -> int:
    """Copy the rest of ``src`` to ``dst`` inside the kernel where it can; the byte count."""
    total = 0
    try:
        # sendfile, as shutil.copyfile did here before (copy_file_range measured no better).
        while n := os.sendfile(dst, src, None, 1 << 30):
            total += n
        return total
    except OSError:  # not on this file system pair: fall back to a plain copy
        pass
    while chunk := os.read(src, _CHUNK):
        _write_all(dst, chunk)
        total += len(chunk)
    return total


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class LocalTransfers:
    """Snapshot writes into a ``LocalStore`` without a sync each: ``upload`` and ``copy`` as
    the store's (create-only, atomic: a file appears under its name whole or not at all),
    and ``download`` checked against the manifest entry as it is written (one read).

    Durability is batched: a file of at least 1 MiB is fsynced when written; smaller ones
    at ``flush``, by one syncfs of the store's file system when there are many (else one
    fsync each), and every folder that gained a name is fsynced once. The caller must call
    ``flush`` before it writes anything that points at these files (the manifest): a crash
    before then leaves an incomplete snapshot, never a manifest naming a file not on disk.
    Safe to use from several threads.
    """

    def __init__(self, store: LocalStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._root = str(store.root)
        # Plain strings on the per-file path (pathlib costs more than the syscalls here).
        self._made: set[str] = set()  # folders known to exist
        self._unsynced: list[str] = []  # files written, data not yet fsynced
        self._folders: set[str] = set()  # folders that gained names since the last flush
        self._temp_prefix = f"{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}-"
        self._count = itertools.count()

    def _target(self, key: str) -> str:
        self._store._path(key) if not _plain_key(key) else None  # raises StoreError for a bad key
        return os.path.join(self._root, key)

    def _temp_beside(self, path: str) -> str:
        folder, name = os.path.split(path)
        return os.path.join(folder, f".{name}{self._temp_prefix}{next(self._count)}")

    def _folder_of(self, path: str) -> None:
        folder = os.path.dirname(path)
        if folder in self._made:
            return
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {folder}: {exc.strerror}") from exc
        with self._lock:
            self._made.add(folder)
            # A new folder is a new name in its parent: fsynced with the rest.
            while folder.startswith(self._root) and folder not in self._folders:
                self._folders.add(folder)
                folder = os.path.dirname(folder)

    def _created(self, path: str, *, synced: bool) -> None:
        with self._lock:
            self._folders.add(os.path.dirname(path))
            if not synced:
                self._unsynced.append(path)

    def upload(self, path: Path, key: str, *, progress: ProgressCallback | None = None,
               if_none_match: bool = False, expect: FileEntry | None = None) -> None:
        """Copy the local file to ``key`` create-only (``if_none_match`` is implied: a
        snapshot's objects are never replaced). ``expect``: the content the caller hashed
        the file as; remembered as the object's, so a later copy of it need not read it."""
        store = self._store
        target = self._target(key)
        self._folder_of(target)
        temp = self._temp_beside(target)
        try:
            src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NotFoundError(f"{path} does not exist") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
        dst = -1
        try:
            dst = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            size = _copy_fd(src, dst)
            sync_now = size >= _SYNC_NOW_BYTES
            if sync_now:
                os.fsync(dst)
            try:
                os.link(temp, target)
            except FileExistsError as exc:
                raise PreconditionFailed(f"{store.url}/{key} already exists") from exc
            finally:
                os.unlink(temp)
            self._created(target, synced=sync_now)
            if expect is not None and size == expect.size:
                store._verified.remember(os.fstat(dst), expect.sha256)
        except OSError as exc:
            if dst >= 0:
                _unlink_quietly(temp)
            raise StoreError(f"cannot upload {path} to {store.url}/{key}: {exc.strerror}") from exc
        finally:
            os.close(src)
            if dst >= 0:
                os.close(dst)
        if progress:
            progress(size)

    def copy(self, src_key: str, dst_key: str, *, expect: FileEntry | None = None,
             if_none_match: bool = False) -> None:
        """A hard link to the source object, create-only, checked against ``expect``: read
        only when this store has not written or hashed that very inode since its last change.
        Where a hard link cannot be made, the store's own (synced) copy."""
        store = self._store
        source, target = self._target(src_key), self._target(dst_key)
        self._folder_of(target)
        try:
            before = os.stat(source)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFoundError(f"{store.url}/{src_key} does not exist") from exc
        except OSError as exc:
            raise StoreError(f"cannot copy {src_key} to {dst_key}: {exc.strerror}") from exc
        if not stat.S_ISREG(before.st_mode):
            raise NotFoundError(f"{store.url}/{src_key} does not exist")
        if expect is not None:
            self._check(src_key, source, before, expect)
        try:
            os.link(source, target)
        except FileExistsError as exc:
            raise PreconditionFailed(f"{store.url}/{dst_key} already exists") from exc
        except FileNotFoundError as exc:
            raise NotFoundError(f"{store.url}/{src_key} does not exist") from exc
        except OSError:  # no hard links here (another file system, a link limit)
            store.copy(src_key, dst_key, expect=expect, if_none_match=True)
            return
        after = os.stat(target)
        if (after.st_ino, after.st_size, after.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
            os.unlink(target)  # changed between the check and the link: check again, on the copy
            store.copy(src_key, dst_key, expect=expect, if_none_match=True)
            return
        self._created(target, synced=True)  # the data is the source's, durable since its commit
        if expect is not None:
            store._verified.remember(after, expect.sha256)

    def _check(self, src_key: str, source: Path, st: os.stat_result, expect: FileEntry) -> None:
        store = self._store
        problem = content_mismatch(expect, size=st.st_size)
        if problem is None and store._verified.lookup(st) != expect.sha256:
            try:
                digest = sha256_file(source)
            except FileNotFoundError as exc:
                raise NotFoundError(f"{store.url}/{src_key} does not exist") from exc
            problem = content_mismatch(expect, size=st.st_size, sha256=digest)
            if problem is None and _same_state(os.stat(source), st):
                store._verified.remember(st, digest)
        if problem:
            raise IntegrityError(f"{store.url}/{src_key} does not hold the expected content: {problem}")

    def download(self, key: str, path: Path, *, progress: ProgressCallback | None = None,
                 expect: FileEntry | None = None) -> os.stat_result:
        """Copy ``key`` to the local file ``path`` (which the caller renames into place),
        hashing it as it is written when ``expect`` is given: IntegrityError on a mismatch,
        nothing left at ``path``. Not synced (a restore is done again after a crash).
        Returns the written file's stat."""
        store = self._store
        source = self._target(key)
        self._folder_of(str(path))
        try:
            src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFoundError(f"{store.url}/{key} does not exist") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {store.url}/{key}: {exc.strerror}") from exc
        try:
            try:
                dst = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise StoreError(f"cannot download {store.url}/{key} to {path}: {exc.strerror}") from exc
            try:
                digest = hashlib.sha256() if expect is not None else None
                size = 0
                # One buffer, reused: a fresh 1 MiB object per chunk costs its page faults
                # (a 1 GiB restore took 3x as long).
                buffer = memoryview(bytearray(min(_CHUNK, max(expect.size if expect else _CHUNK, 1) + 1)))
                while n := os.readv(src, [buffer]):
                    chunk = buffer[:n]
                    if digest is not None:
                        digest.update(chunk)
                    _write_all(dst, chunk)
                    size += n
                written = os.fstat(dst)
            except OSError as exc:
                raise StoreError(f"cannot download {store.url}/{key} to {path}: {exc.strerror}") from exc
            finally:
                os.close(dst)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            os.close(src)
        if expect is not None:
            problem = content_mismatch(expect, size=size, sha256=digest.hexdigest())
            if problem:
                path.unlink(missing_ok=True)
                raise IntegrityError(f"{store.url}/{key} does not match its manifest entry: {problem}")
        if progress:
            progress(size)
        return written

    def flush(self) -> None:
        """Make every file written so far durable, and every folder that gained a name."""
        with self._lock:
            files, self._unsynced = self._unsynced, []
            folders, self._folders = self._folders, set()
        try:
            synced_all = False
            if len(files) >= _SYNCFS_FROM:
                fd = os.open(self._store.root, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    synced_all = _syncfs(fd)
                finally:
                    os.close(fd)
            if not synced_all:
                for path in files:
                    fsync_path(path)
            # Deepest first; after a syncfs these find nothing left to write.
            for folder in sorted(folders, key=lambda p: p.count(os.sep), reverse=True):
                fsync_path(folder)
        except OSError as exc:
            raise StoreError(f"cannot make the snapshot durable in {self._store.url}: {exc.strerror}") from exc


def _plain_key(key: str) -> bool:
    """A key with nothing for ``LocalStore._path`` to refuse (the common case, checked fast)."""
    return bool(key) and key[0] != "/" and "//" not in key and key[-1] != "/" and "/." not in key \
        and not key.startswith(".")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _same_state(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (b.st_ino, b.st_size, b.st_mtime_ns, b.st_ctime_ns)
