"""Corruption does not spread: a bad or missing object in one snapshot is never copied into
the next one, never fails every later commit, and a bad local file is never kept by restore.
Both stores (``any_store``: a local folder and moto S3)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from runctl.errors import IntegrityError, NotFoundError
from runctl.models import FileEntry
from runctl.store.local import LocalStore


def flip_in_place(path: Path) -> None:
    """Change one byte of ``path`` where it lies (same size, same inode), keeping its mtime:
    what bit rot or a careless tool does."""
    before = os.stat(path)
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def corrupt(store, key: str) -> None:
    """Overwrite the object's bytes, same size: in place in a folder, a new PUT on S3."""
    if isinstance(store, LocalStore):
        flip_in_place(store.root / key)
    else:
        data = store.read(key).data
        store.write(key, bytes([data[0] ^ 0xFF]) + data[1:])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("damage", ["corrupt", "delete"])
def test_store_copy_checks_the_expected_content(any_store, damage):
    data = os.urandom(5000)
    any_store.write("a/w.bin", data)
    entry = FileEntry("w.bin", len(data), sha(data))
    any_store.copy("a/w.bin", "b/w.bin", expect=entry)
    assert any_store.read("b/w.bin").data == data

    if damage == "corrupt":
        corrupt(any_store, "a/w.bin")
        with pytest.raises(IntegrityError, match=rf"a/w\.bin does not hold the expected content: sha256 expected {entry.sha256}"):
            any_store.copy("a/w.bin", "c/w.bin", expect=entry)
    else:
        any_store.delete(["a/w.bin"])
        with pytest.raises(NotFoundError, match=r"a/w\.bin does not exist"):
            any_store.copy("a/w.bin", "c/w.bin", expect=entry)
    assert not any_store.exists("c/w.bin")  # no bad copy is left behind


def test_store_copy_checks_the_size(any_store):
    data = os.urandom(100)
    any_store.write("a/w.bin", data)
    with pytest.raises(IntegrityError, match="size expected 101, got 100"):
        any_store.copy("a/w.bin", "c/w.bin", expect=FileEntry("w.bin", 101, sha(data)))
    assert not any_store.exists("c/w.bin")


def test_s3_checks_a_copy_too_big_for_one_request_by_reading_it_back(s3_store, monkeypatch):
    from runctl.store import s3

    monkeypatch.setattr(s3, "COPY_PART_THRESHOLD", 5 * s3.MiB)  # S3's smallest part size
    monkeypatch.setattr(s3, "COPY_PART_SIZE", 5 * s3.MiB)
    data = os.urandom(11 * s3.MiB)
    s3_store.write("a/big.bin", data)
    entry = FileEntry("big.bin", len(data), sha(data))
    s3_store.copy("a/big.bin", "b/big.bin", expect=entry)
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=s3_store._full("b/big.bin"))
    assert head["ETag"].strip('"').endswith("-3")  # copied in three parts
    assert s3_store.read("b/big.bin").data == data

    corrupt(s3_store, "a/big.bin")
    with pytest.raises(IntegrityError, match=r"a/big\.bin does not hold the expected content: sha256 expected"):
        s3_store.copy("a/big.bin", "c/big.bin", expect=entry)
    assert not s3_store.exists("c/big.bin")
