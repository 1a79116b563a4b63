"""Checkpoint stores: one URL root, a local-folder and an S3 implementation.

``open_store("s3://bucket/prefix")``, ``open_store("file:///abs/path")`` or
``open_store("relative/or/absolute/path")``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from runctl.errors import UsageError
from runctl.store.base import Blob, ObjectInfo, ProgressCallback, Store

__all__ = ["Blob", "ObjectInfo", "ProgressCallback", "Store", "open_store", "parse_store_url"]

SUPPORTED = "a folder path, file:///abs/path or s3://bucket/prefix"


def parse_store_url(url: str) -> tuple[str, str, str]:
    """Split a store URL into (scheme, location, prefix). Pure; raises UsageError."""
    if not url or not url.strip():
        raise UsageError(f"empty store URL; use {SUPPORTED}")
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UsageError(f"store URL {url!r} names no bucket; use s3://bucket/prefix")
        return "s3", parsed.netloc, parsed.path.strip("/")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UsageError(f"store URL {url!r} names a host; use file:///abs/path")
        path = unquote(parsed.path)
        if "\0" in path:  # %00: no file name can hold it
            raise UsageError(f"store URL {url!r} holds a NUL character; use {SUPPORTED}")
        return "file", path, ""
    # A one-letter scheme is a Windows drive, i.e. a path; "" is a plain path.
    if parsed.scheme and len(parsed.scheme) > 1:
        raise UsageError(f"unknown store URL scheme {parsed.scheme + '://'!r} in {url!r}; use {SUPPORTED}")
    return "file", url, ""


def open_store(url: str, *, session=None, endpoint_url: str | None = None) -> Store:
    """The store behind ``url``. S3 stores use ``session`` (a boto3 Session) when given."""
    scheme, location, prefix = parse_store_url(url)
    if scheme == "s3":
        from runctl.store.s3 import S3Store

        return S3Store(location, prefix, session=session, endpoint_url=endpoint_url)
    from runctl.store.local import LocalStore

    return LocalStore(Path(location))
