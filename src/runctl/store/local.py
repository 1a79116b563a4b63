"""A checkpoint store in a local folder (the default; also any mounted network folder).

Every write goes to a temporary name in the destination folder, is fsynced, then renamed
into place and the folder fsynced: a crash leaves either the old object or the new one.

``LocalStore.transfers()`` gives the snapshot protocol the same create-only writes without
a sync per file (``LocalTransfers``): a commit makes them all durable at once, before its
manifest is written, so thousands of small files do not cost thousands of fsyncs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from runctl.errors import IntegrityError, NotFoundError, PreconditionFailed, StoreError, UsageError
from runctl.fsutil import TEMP_MARKER, fsync_path, temp_name_beside
from runctl.models import FileEntry
from runctl.store.base import Blob, ObjectInfo, ProgressCallback, download_temp, file_mismatch
from runctl.store.local_transfers import LocalTransfers, VerifiedObjects

_LOCK_NAME = ".runctl-lock"
#: The kernel's views of processes and devices: folders, but no place to keep files.
_KERNEL_FOLDERS = (Path("/proc"), Path("/sys"))
_FIX = "give a folder path, file:///abs/path or s3://bucket/prefix"


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _only_leftovers(folder: str) -> bool:
    """A folder holding nothing but a crashed writer's temporary files is no object folder."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    return bool(entries) and all(TEMP_MARKER in e.name and e.is_file(follow_symlinks=False) for e in entries)


def _check_root(given: str, root: Path) -> None:
    """Refuse a root that can never hold the store's files (UsageError): the fix is a
    different --store, so say so now rather than fail on the first write."""
    for kernel in _KERNEL_FOLDERS:
        if root.is_relative_to(kernel):
            raise UsageError(f"store {given} is in {kernel}, which holds no files; {_FIX}")
    # The nearest existing folder on the way up must be a folder; os.path's checks take an
    # unreadable or impossible path (below a file) as missing rather than raising.
    existing = next(p for p in (root, *root.parents) if os.path.exists(p))
    if os.path.isdir(existing):
        return
    if existing == root:
        raise UsageError(f"store {given} is not a folder; {_FIX}")
    raise UsageError(f"store {given} is inside a file ({existing}); {_FIX}")


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        _check_root(str(root), self.root)
        self.url = self.root.as_uri()
        self._verified = VerifiedObjects()

    def transfers(self) -> LocalTransfers | None:
        """Create-only writes for one snapshot commit, made durable together by ``flush``;
        None for a subclass that changes how objects are uploaded, copied or downloaded (its
        own methods are then used, one synced object at a time)."""
        own = all(getattr(type(self), name) is getattr(LocalStore, name) for name in ("upload", "copy", "download"))
        return LocalTransfers(self) if own else None

    def __repr__(self) -> str:
        return f"LocalStore({self.url})"

    # -- paths -----------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise StoreError(f"invalid store key {key!r}")
        return self.root / key

    def _temp_beside(self, path: Path) -> Path:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from exc
        return temp_name_beside(path)

    def _publish(self, temp: Path, path: Path, *, if_none_match: bool = False) -> None:
        """Move ``temp`` to ``path``. ``if_none_match``: only if ``path`` does not exist: a
        hard link, which the kernel refuses atomically when the name is taken (between
        processes too), then the temporary name removed; PreconditionFailed otherwise."""
        if not if_none_match:
            os.replace(temp, path)
        else:
            try:
                os.link(temp, path)
            except FileExistsError as exc:
                temp.unlink(missing_ok=True)
                raise PreconditionFailed(f"{self.url}/{self._key_of(path)} already exists") from exc
            temp.unlink()
        fsync_path(path.parent)

    def _key_of(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    @contextmanager
    def _locked(self):
        """Serialise conditional writes between processes sharing this folder."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = open(self.root / _LOCK_NAME, "a")
        except OSError as exc:
            raise StoreError(f"cannot write to store {self.url}: {exc.strerror}") from exc
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- the protocol ----------------------------------------------------------------
    def read(self, key: str) -> Blob:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFoundError(f"{self.url}/{key} does not exist") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {self.url}/{key}: {exc.strerror}") from exc
        return Blob(data, _etag(data))

    def write(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        path = self._path(key)
        if not (if_none_match or if_match):
            self._write_file(path, data)
            return _etag(data)
        with self._locked():
            exists = path.is_file()
            if if_none_match and exists:
                raise PreconditionFailed(f"{self.url}/{key} already exists")
            if if_match is not None and (not exists or _etag(path.read_bytes()) != if_match):
                raise PreconditionFailed(f"{self.url}/{key} changed since it was read")
            self._write_file(path, data)
        return _etag(data)

    def _write_file(self, path: Path, data: bytes) -> None:
        temp = self._temp_beside(path)
        try:
            with open(temp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._publish(temp, path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {path}: {exc.strerror}") from exc

    def upload(self, path: Path, key: str, *, progress: ProgressCallback | None = None,
               if_none_match: bool = False) -> None:
        target = self._path(key)
        temp = self._temp_beside(target)
        try:
            shutil.copyfile(path, temp)
            with open(temp, "rb+") as f:
                os.fsync(f.fileno())
            self._publish(temp, target, if_none_match=if_none_match)
        except FileNotFoundError as exc:
            temp.unlink(missing_ok=True)
            raise NotFoundError(f"{path} does not exist") from exc
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"cannot upload {path} to {self.url}/{key}: {exc.strerror}") from exc
        if progress:
            progress(target.stat().st_size)

    def download(self, key: str, path: Path, *, progress: ProgressCallback | None = None) -> None:
        source = self._path(key)
        path = Path(path)
        if not source.is_file():  # missing, or a folder: either way no such object
            raise NotFoundError(f"{self.url}/{key} does not exist")
        temp = download_temp(path)
        try:
            shutil.copyfile(source, temp)
            os.replace(temp, path)
        except FileNotFoundError as exc:
            temp.unlink(missing_ok=True)
            raise NotFoundError(f"{self.url}/{key} does not exist") from exc
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"cannot download {self.url}/{key} to {path}: {exc.strerror}") from exc
        if progress:
            progress(path.stat().st_size)

    def open_read(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFoundError(f"{self.url}/{key} does not exist") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {self.url}/{key}: {exc.strerror}") from exc

    def copy(self, src_key: str, dst_key: str, *, expect: FileEntry | None = None,
             if_none_match: bool = False) -> None:
        source, target = self._path(src_key), self._path(dst_key)
        temp = self._temp_beside(target)
        try:
            try:
                # Store objects are never modified in place (writes replace them), so a
                # hard link is a safe, instant copy.
                os.link(source, temp)
            except OSError:
                shutil.copyfile(source, temp)
            problem = file_mismatch(temp, expect) if expect is not None else None
            if problem:
                temp.unlink()
                raise IntegrityError(f"{self.url}/{src_key} does not hold the expected content: {problem}")
            self._publish(temp, target, if_none_match=if_none_match)
        except FileNotFoundError as exc:
            temp.unlink(missing_ok=True)
            raise NotFoundError(f"{self.url}/{src_key} does not exist") from exc
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"cannot copy {src_key} to {dst_key}: {exc.strerror}") from exc

    def _check_prefix(self, prefix: str) -> None:
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise StoreError(f"invalid store prefix {prefix!r}")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._check_prefix(prefix)
        # Walk only below the folder part of the prefix; filter the rest by name.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / folder if folder else self.root
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if TEMP_MARKER in name or name == _LOCK_NAME:
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if key.startswith(prefix):
                    try:
                        size = os.stat(os.path.join(dirpath, name)).st_size
                    except FileNotFoundError:  # deleted while we walked
                        continue
                    found.append(ObjectInfo(key, size))
        yield from sorted(found, key=lambda o: o.key)

    def list_dirs(self, prefix: str) -> list[str]:
        self._check_prefix(prefix)
        folder = self.root / prefix.rstrip("/") if prefix.strip("/") else self.root
        try:
            return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not _only_leftovers(entry.path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, keys: Iterable[str]) -> None:
        emptied = set()
        for key in keys:
            path = self._path(key)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot delete {self.url}/{key}: {exc.strerror}") from exc
            emptied.add(path.parent)
        # Remove folders the deletes left empty, so listings stay tidy. Temporary files
        # in them are the leftovers of a writer that crashed: they go too.
        for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
            while folder != self.root and folder.is_relative_to(self.root):
                self._remove_crash_leftovers(folder)
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent

    @staticmethod
    def _remove_crash_leftovers(folder: Path) -> None:
        try:
            for entry in os.scandir(folder):
                if TEMP_MARKER in entry.name and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
        except FileNotFoundError:
            pass

    def presign(self, key: str, expires_s: int = 3600) -> str:
        return self._path(key).as_uri()

