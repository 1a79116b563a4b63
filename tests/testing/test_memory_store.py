"""MemoryStore: what only the in-memory double has. The Store protocol itself is held to
the same suite as LocalStore and S3Store in tests/store/test_store.py (``any_store[memory]``)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

import pytest

from runctl.errors import IntegrityError, NotFoundError, PreconditionFailed, StoreError
from runctl.models import FileEntry
from runctl.store import Store
from runctl.testing import FaultyStore, MemoryStore


def test_exported_lazily_from_runctl_testing():
    code = ("import sys, runctl.testing; assert 'runctl.testing.memory_store' not in sys.modules; "
            "from runctl.testing import MemoryStore; assert isinstance(MemoryStore(), runctl.store.Store)")
    subprocess.run([sys.executable, "-c", "import runctl.store; " + code], check=True)


def test_each_store_is_its_own():
    a, b = MemoryStore(), MemoryStore("named")
    assert isinstance(a, Store) and a.url.startswith("memory://") and a.url != b.url
    assert b.url == "memory://named"
    a.write("k", b"x")
    assert not b.exists("k")


def test_a_key_and_keys_below_it_coexist_as_on_s3():
    store = MemoryStore()
    store.write("a/b", b"1")
    store.write("a/b/c", b"22")
    assert [(o.key, o.size) for o in store.list("a/")] == [("a/b", 1), ("a/b/c", 2)]
    assert store.list_dirs("a/") == ["b"] and store.list_dirs("a") == ["b"]


def test_listing_prefixes_cannot_point_above_the_root():
    store = MemoryStore()
    for bad in ("../", "/etc/", "a/../../"):
        with pytest.raises(StoreError, match="invalid store prefix"):
            list(store.list(bad))
        with pytest.raises(StoreError, match="invalid store prefix"):
            store.list_dirs(bad)


def test_copy_checks_expect_and_leaves_no_copy_on_a_mismatch():
    store = MemoryStore()
    store.write("src", b"weights")
    good = FileEntry("w", 7, hashlib.sha256(b"weights").hexdigest())
    store.copy("src", "dst", expect=good, if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.copy("src", "dst", if_none_match=True)
    with pytest.raises(IntegrityError, match="memory://.*/src does not hold the expected content: size"):
        store.copy("src", "other", expect=FileEntry("w", 8, good.sha256))
    with pytest.raises(IntegrityError, match="sha256"):
        store.copy("src", "other", expect=FileEntry("w", 7, "0" * 64))
    assert not store.exists("other")


def test_upload_if_none_match_leaves_the_object_there(tmp_path):
    store = MemoryStore()
    store.write("k", b"first")
    (tmp_path / "f").write_bytes(b"second")
    with pytest.raises(PreconditionFailed):
        store.upload(tmp_path / "f", "k", if_none_match=True)
    assert store.read("k").data == b"first"


def test_presign_is_a_data_url_of_the_bytes_then():
    store = MemoryStore()
    store.write("k", b"hello")
    assert store.presign("k") == "data:application/octet-stream;base64,aGVsbG8="
    with pytest.raises(NotFoundError):
        store.presign("missing")


def test_conditional_writes_race_safely_between_threads():
    store = MemoryStore()
    etag = store.write("lease.json", b"0")
    wins: list[int] = []
    start = threading.Barrier(8)

    def contend(i: int) -> None:
        start.wait()
        try:
            store.write("lease.json", str(i + 1).encode(), if_match=etag)
            wins.append(i)
        except PreconditionFailed:
            pass

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and store.read("lease.json").data == str(wins[0] + 1).encode()


def test_faulty_store_wraps_it():
    faulty = FaultyStore(MemoryStore())
    faulty.inject("write", key="lease.json", when="after", error=PreconditionFailed("412 (injected)"))
    with pytest.raises(PreconditionFailed):
        faulty.write("jobs/j/lease.json", b"mine", if_none_match=True)
    assert faulty.read("jobs/j/lease.json").data == b"mine"  # it landed, the answer was lost
    assert faulty.calls == [("write", "jobs/j/lease.json", "failed after"), ("read", "jobs/j/lease.json", "ok")]
