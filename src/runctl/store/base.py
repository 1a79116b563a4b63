"""The object store protocol: the few calls every checkpoint store backend offers.

Keys are '/'-separated, relative to the store's root URL, never starting with '/'.
Implementations: ``LocalStore`` (a folder) and ``S3Store`` (a bucket and prefix).
Everything above this layer (snapshots, status, leases, logs) is written against this
protocol only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from runctl.errors import StoreError
from runctl.fsutil import temp_name_beside
from runctl.models import FileEntry
from runctl.store.hashing import sha256_file

def download_temp(path: Path) -> Path:
    """The temporary name a download to ``path`` writes first (its folder created)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from exc
    return temp_name_beside(path)


def content_mismatch(expect: FileEntry, *, size: int, sha256: str | None = None) -> str | None:
    """What differs between the content ``expect`` describes and the one found, or None.
    ``sha256`` None: only the size is known yet."""
    if size != expect.size:
        return f"size expected {expect.size}, got {size}"
    if sha256 is not None and sha256 != expect.sha256:
        return f"sha256 expected {expect.sha256}, got {sha256}"
    return None


def file_mismatch(path: Path, expect: FileEntry) -> str | None:
    """How the local file differs from ``expect`` (hashed only when its size is right)."""
    size = os.stat(path).st_size
    if size != expect.size:
        return content_mismatch(expect, size=size)
    return content_mismatch(expect, size=size, sha256=sha256_file(path))


#: Called with the number of bytes just transferred; used for progress bars.
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@dataclass(frozen=True)
class Blob:
    data: bytes
    etag: str  # opaque version token for compare-and-swap writes


@runtime_checkable
class Store(Protocol):
    url: str  # the root URL, e.g. "file:///abs/path" or "s3://bucket/prefix"

    def read(self, key: str) -> Blob:
        """The object's bytes and version. Raises NotFoundError."""

    def write(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Write atomically (readers see the old or the new object, never a part).

        ``if_none_match``: fail with PreconditionFailed if the key exists.
        ``if_match``: fail with PreconditionFailed unless the current version is that etag.
        Returns the new etag.
        """

    def upload(self, path: Path, key: str, *, progress: ProgressCallback | None = None,
               if_none_match: bool = False) -> None:
        """Copy a local file to ``key`` atomically (multipart for large files on S3).

        ``if_none_match``: create only: fail with PreconditionFailed, leaving the object
        there as it is, when ``key`` exists (or another writer creates it meanwhile).
        """

    def download(self, key: str, path: Path, *, progress: ProgressCallback | None = None) -> None:
        """Copy ``key`` to a local file, writing a temporary name then renaming it."""

    def open_read(self, key: str) -> BinaryIO:
        """A stream of ``key``'s bytes (one GET on S3), for a consumer that works as they
        come; the caller closes it. Raises NotFoundError."""

    def copy(self, src_key: str, dst_key: str, *, expect: FileEntry | None = None,
             if_none_match: bool = False) -> None:
        """Copy an object within the store (server-side on S3: no bytes through this machine).

        ``if_none_match``: create only, as for ``upload``: PreconditionFailed when ``dst_key``
        exists, and the object there is left as it is.

        ``expect``: the size and sha256 the object must hold, checked on the copy itself, so
        the check and the copy see the same bytes (a folder store hashes the copy; S3
        computes the copy's SHA256). On a mismatch: IntegrityError naming the source, and
        no copy left at ``dst_key``. A missing source: NotFoundError.
        """

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""

    def list_dirs(self, prefix: str) -> list[str]:
        """The immediate 'sub-folder' names below ``prefix`` (which ends with '/')."""

    def exists(self, key: str) -> bool: ...

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the given keys; missing keys are not an error."""

    def presign(self, key: str, expires_s: int = 3600) -> str:
        """A URL that reads ``key`` without credentials (S3) or a file:// URL (local)."""
