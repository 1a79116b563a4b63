"""A checkpoint store in memory: the Store protocol of ``runctl.store.base`` without a disk.

``MemoryStore()`` behaves as ``LocalStore`` does for every call the protocol names: the
same key rules (``StoreError`` "invalid store key"), ``NotFoundError`` for a missing object,
``PreconditionFailed`` for a failed ``if_none_match`` / ``if_match``, ``IntegrityError`` for
a ``copy`` whose source does not hold what ``expect`` says, and content etags (the same
bytes give the same etag, as on a folder and on S3). Like S3 it may hold both ``a/b`` and
``a/b/c``. Every call is atomic (one lock), so agents' threads can share one.

What a memory cannot do as a folder or a bucket does:

- It lives in this process only: a child process cannot open it (its ``url`` is
  ``memory://<name>``, which ``open_store`` does not know).
- ``presign`` returns a ``data:`` URL holding the object's bytes as they are when it is
  called (``urllib.request.urlopen`` reads it); a missing key is ``NotFoundError``.

Use it for tests that need a store, not a particular one; wrap it in
``runctl.testing.FaultyStore`` to make chosen calls fail.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from runctl.errors import IntegrityError, NotFoundError, PreconditionFailed, StoreError
from runctl.models import FileEntry
from runctl.store.base import Blob, ObjectInfo, ProgressCallback, content_mismatch, download_temp

_names = itertools.count(1)


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _check_key(key: str) -> str:
    """The rule LocalStore and S3Store share: relative, '/'-separated, no empty, '.' or '..' parts."""
    if not isinstance(key, str) or not key or key.startswith("/") or any(
            part in ("", ".", "..") for part in key.split("/")):
        raise StoreError(f"invalid store key {key!r}")
    return key


def _check_prefix(prefix: str) -> str:
    """LocalStore's rule for listing prefixes: nothing that could point above the root."""
    if prefix.startswith("/") or ".." in prefix.split("/"):
        raise StoreError(f"invalid store prefix {prefix!r}")
    return prefix


class MemoryStore:
    """A Store whose objects are bytes in a dict. Thread-safe."""

    def __init__(self, name: str | None = None) -> None:
        self.url = f"memory://{name or f'store-{next(_names)}'}"
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore({self.url}, {len(self._objects)} objects)"

    def _where(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _get(self, key: str) -> bytes:
        """The object's bytes; the caller holds the lock."""
        try:
            return self._objects[key]
        except KeyError:
            raise NotFoundError(f"{self._where(key)} does not exist") from None

    def _put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Store ``data`` at ``key`` under the preconditions; the caller holds the lock."""
        current = self._objects.get(key)
        if if_none_match and current is not None:
            raise PreconditionFailed(f"{self._where(key)} already exists")
        if if_match is not None and (current is None or _etag(current) != if_match):
            raise PreconditionFailed(f"{self._where(key)} changed since it was read")
        self._objects[key] = data
        return _etag(data)

    # -- the protocol ----------------------------------------------------------------
    def read(self, key: str) -> Blob:
        _check_key(key)
        with self._lock:
            data = self._get(key)
        return Blob(data, _etag(data))

    def write(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        _check_key(key)
        data = bytes(data)
        with self._lock:
            return self._put(key, data, if_none_match=if_none_match, if_match=if_match)

    def upload(self, path: Path, key: str, *, progress: ProgressCallback | None = None,
               if_none_match: bool = False) -> None:
        _check_key(key)
        path = Path(path)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFoundError(f"{path} does not exist or is not a file") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
        with self._lock:
            self._put(key, data, if_none_match=if_none_match)
        if progress:
            progress(len(data))

    def download(self, key: str, path: Path, *, progress: ProgressCallback | None = None) -> None:
        _check_key(key)
        path = Path(path)
        with self._lock:
            data = self._get(key)  # before any folder or temporary file is made
        temp = download_temp(path)
        try:
            temp.write_bytes(data)
            os.replace(temp, path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"cannot download {self._where(key)} to {path}: {exc.strerror}") from exc
        if progress:
            progress(len(data))

    def open_read(self, key: str) -> BinaryIO:
        _check_key(key)
        with self._lock:
            return io.BytesIO(self._get(key))

    def copy(self, src_key: str, dst_key: str, *, expect: FileEntry | None = None,
             if_none_match: bool = False) -> None:
        _check_key(src_key)
        _check_key(dst_key)
        with self._lock:
            data = self._get(src_key)
            if expect is not None:
                problem = content_mismatch(expect, size=len(data), sha256=hashlib.sha256(data).hexdigest())
                if problem:
                    raise IntegrityError(f"{self._where(src_key)} does not hold the expected content: {problem}")
            self._put(dst_key, data, if_none_match=if_none_match)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        _check_prefix(prefix)
        with self._lock:
            found = sorted((key, len(data)) for key, data in self._objects.items() if key.startswith(prefix))
        for key, size in found:
            yield ObjectInfo(key, size)

    def list_dirs(self, prefix: str) -> list[str]:
        _check_prefix(prefix)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        with self._lock:
            keys = [key[len(prefix):] for key in self._objects if key.startswith(prefix)]
        return sorted({rest.split("/", 1)[0] for rest in keys if "/" in rest})

    def exists(self, key: str) -> bool:
        _check_key(key)
        with self._lock:
            return key in self._objects

    def delete(self, keys: Iterable[str]) -> None:
        keys = [_check_key(key) for key in keys]
        with self._lock:
            for key in keys:
                self._objects.pop(key, None)

    def presign(self, key: str, expires_s: int = 3600) -> str:
        _check_key(key)
        with self._lock:
            data = self._get(key)
        return "data:application/octet-stream;base64," + base64.b64encode(data).decode("ascii")
