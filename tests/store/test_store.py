"""One suite for the Store protocol, run against both implementations and the shipped
in-memory double (``any_store``: local, s3, memory), then the few things only S3 has
(pagination, missing bucket, credentials, endpoints)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import pytest

from runctl.errors import NotFoundError, PreconditionFailed, StoreError
from runctl.store import ObjectInfo, Store, open_store
from runctl.store.local import LocalStore
from runctl.store.s3 import MULTIPART_THRESHOLD, S3Store

MiB = 1024 * 1024


def keys(store: Store, prefix: str = "") -> list[str]:
    return [o.key for o in store.list(prefix)]


@pytest.fixture(params=["local", "s3", "memory"])
def any_store(request):
    """Here (the protocol's contract) ``runctl.testing.MemoryStore`` is held to it too."""
    return request.getfixturevalue(f"{request.param}_store")


# -- every implementation ----------------------------------------------------------------
def test_is_a_store(any_store):
    assert isinstance(any_store, Store)


def test_write_read_roundtrip(any_store):
    etag = any_store.write("jobs/j1/status.json", b'{"state": "running"}')
    blob = any_store.read("jobs/j1/status.json")
    assert blob.data == b'{"state": "running"}'
    assert blob.etag == etag
    etag2 = any_store.write("jobs/j1/status.json", b"")
    assert any_store.read("jobs/j1/status.json").data == b""
    assert etag2 != etag


def test_read_missing_is_not_found(any_store):
    with pytest.raises(NotFoundError, match="nothing/here"):
        any_store.read("nothing/here")


def test_if_none_match_only_creates(any_store):
    any_store.write("jobs/j/lease.json", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        any_store.write("jobs/j/lease.json", b"second", if_none_match=True)
    assert any_store.read("jobs/j/lease.json").data == b"first"


def test_if_match_is_compare_and_swap(any_store):
    old = any_store.write("lease.json", b"v1")
    fresh = any_store.write("lease.json", b"v2", if_match=old)
    with pytest.raises(PreconditionFailed):
        any_store.write("lease.json", b"v3", if_match=old)  # stale
    assert any_store.read("lease.json").data == b"v2"
    any_store.write("lease.json", b"v3", if_match=fresh)
    assert any_store.read("lease.json").data == b"v3"


def test_if_match_on_missing_key_fails(any_store):
    etag = any_store.write("gone.json", b"x")
    any_store.delete(["gone.json"])
    with pytest.raises(PreconditionFailed):
        any_store.write("gone.json", b"y", if_match=etag)


def test_large_upload_download_roundtrip(any_store, tmp_path):
    size = 20 * MiB + 123  # above the multipart threshold, not a multiple of the part size
    assert size > 2 * MULTIPART_THRESHOLD
    source = tmp_path / "big.bin"
    payload = os.urandom(size)
    source.write_bytes(payload)

    sent: list[int] = []
    any_store.upload(source, "jobs/j/checkpoints/1/model.pt", progress=sent.append)
    assert sum(sent) == size
    assert list(any_store.list("jobs/j/checkpoints/1/")) == [ObjectInfo("jobs/j/checkpoints/1/model.pt", size)]

    received: list[int] = []
    target = tmp_path / "out" / "deep" / "model.pt"
    any_store.download("jobs/j/checkpoints/1/model.pt", target, progress=received.append)
    assert sum(received) == size
    assert target.read_bytes() == payload
    assert os.listdir(target.parent) == ["model.pt"]  # no temporary file left behind


def test_upload_missing_file_is_not_found(any_store, tmp_path):
    with pytest.raises(NotFoundError):
        any_store.upload(tmp_path / "absent.bin", "x.bin")


def test_download_missing_key_is_not_found(any_store, tmp_path):
    with pytest.raises(NotFoundError):
        any_store.download("absent.bin", tmp_path / "out" / "x.bin")
    out = tmp_path / "out"
    assert not out.exists() or os.listdir(out) == []  # no file, no temporary file


def test_download_of_a_folder_is_not_found(any_store, tmp_path):
    any_store.write("jobs/j/job.json", b"{}")
    with pytest.raises(NotFoundError):
        any_store.download("jobs/j", tmp_path / "j")


def test_download_replaces_existing_file(any_store, tmp_path):
    any_store.write("a.txt", b"new")
    target = tmp_path / "a.txt"
    target.write_bytes(b"old contents")
    any_store.download("a.txt", target)
    assert target.read_bytes() == b"new"


def test_open_read_streams_the_object(any_store):
    data = bytes(range(256)) * 5000
    any_store.write("big/blob", data)
    stream = any_store.open_read("big/blob")
    try:
        got = b"".join(iter(lambda: stream.read(4096), b""))
    finally:
        stream.close()
    assert got == data
    with pytest.raises(NotFoundError):
        any_store.open_read("big/missing")


def test_copy(any_store):
    any_store.write("jobs/j/checkpoints/1/w.bin", b"weights")
    any_store.copy("jobs/j/checkpoints/1/w.bin", "jobs/j/checkpoints/2/w.bin")
    assert any_store.read("jobs/j/checkpoints/2/w.bin").data == b"weights"
    # The copy is independent of its source.
    any_store.write("jobs/j/checkpoints/1/w.bin", b"changed")
    assert any_store.read("jobs/j/checkpoints/2/w.bin").data == b"weights"


def test_copy_missing_source_is_not_found(any_store):
    with pytest.raises(NotFoundError, match="nope"):
        any_store.copy("nope", "dst")
    assert not any_store.exists("dst")


def test_list_with_prefix(any_store):
    # (A local folder cannot hold both "a/b" and "a/b/c"; the layout never needs that.)
    for key, data in [("a/b1", b"1"), ("a/bc", b"22"), ("a/b/c", b"333"), ("ab", b"4"), ("z", b"")]:
        any_store.write(key, data)
    assert keys(any_store) == ["a/b/c", "a/b1", "a/bc", "ab", "z"]
    assert keys(any_store, "a/") == ["a/b/c", "a/b1", "a/bc"]
    assert keys(any_store, "a/b") == ["a/b/c", "a/b1", "a/bc"]
    assert keys(any_store, "a/b/") == ["a/b/c"]
    assert keys(any_store, "a") == ["a/b/c", "a/b1", "a/bc", "ab"]
    assert keys(any_store, "missing/") == []
    assert {o.key: o.size for o in any_store.list("a/")} == {"a/b1": 1, "a/bc": 2, "a/b/c": 3}


def test_list_dirs(any_store):
    for key in ["jobs/j1/job.json", "jobs/j1/checkpoints/1/x", "jobs/j1/checkpoints/2/MANIFEST.json",
                "jobs/j2/job.json", "top.txt"]:
        any_store.write(key, b"x")
    assert any_store.list_dirs("") == ["jobs"]
    assert any_store.list_dirs("jobs/") == ["j1", "j2"]
    assert any_store.list_dirs("jobs/j1/") == ["checkpoints"]
    assert any_store.list_dirs("jobs/j1/checkpoints/") == ["1", "2"]
    assert any_store.list_dirs("jobs/j2/") == []
    assert any_store.list_dirs("nothing/") == []


def test_delete(any_store):
    for key in ["jobs/j/checkpoints/1/a", "jobs/j/checkpoints/1/b", "jobs/j/checkpoints/2/a", "keep"]:
        any_store.write(key, b"x")
    any_store.delete(["jobs/j/checkpoints/1/a", "jobs/j/checkpoints/1/b", "never/existed"])
    assert keys(any_store) == ["jobs/j/checkpoints/2/a", "keep"]
    assert any_store.list_dirs("jobs/j/checkpoints/") == ["2"]  # no empty folder left
    any_store.delete([])
    any_store.delete(iter(["keep"]))
    assert keys(any_store) == ["jobs/j/checkpoints/2/a"]


def test_exists(any_store):
    assert not any_store.exists("jobs/j/MANIFEST.json")
    any_store.write("jobs/j/MANIFEST.json", b"{}")
    assert any_store.exists("jobs/j/MANIFEST.json")
    assert not any_store.exists("jobs/j")  # a folder is not an object


def test_presign_reads_without_credentials(any_store):
    any_store.write("logs/0/out.txt", b"hello")
    url = any_store.presign("logs/0/out.txt", expires_s=60)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"hello"


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/../b", "./a", "a/.", "..", "a/"])
def test_invalid_keys_are_rejected(any_store, bad):
    for call in (lambda: any_store.read(bad), lambda: any_store.write(bad, b"x"), lambda: any_store.exists(bad)):
        with pytest.raises(StoreError, match="invalid store key"):
            call()


def test_local_prefix_cannot_escape_the_root(local_store):
    local_store.write("a", b"x")
    for bad in ("../", "/etc/", "a/../../"):
        with pytest.raises(StoreError, match="invalid store prefix"):
            list(local_store.list(bad))
        with pytest.raises(StoreError, match="invalid store prefix"):
            local_store.list_dirs(bad)


def test_open_store_urls(tmp_path, moto_server):
    local = open_store(str(tmp_path / "s"))
    assert isinstance(local, LocalStore) and local.url == (tmp_path / "s").as_uri()
    assert isinstance(open_store((tmp_path / "s").as_uri()), LocalStore)
    s3 = open_store("s3://bucket/a/b/")
    assert isinstance(s3, S3Store) and s3.url == "s3://bucket/a/b"
    assert open_store("s3://bucket").url == "s3://bucket"


# -- S3 only ---------------------------------------------------------------------------
def test_s3_keys_live_under_the_prefix(s3_store, s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="team/runs2/other", Body=b"x")  # a sibling prefix
    s3_client.put_object(Bucket=s3_bucket, Key="elsewhere", Body=b"x")
    s3_store.write("jobs/j/job.json", b"{}")
    assert s3_client.get_object(Bucket=s3_bucket, Key="team/runs/jobs/j/job.json")["Body"].read() == b"{}"
    assert keys(s3_store) == ["jobs/j/job.json"]
    assert s3_store.list_dirs("") == ["jobs"]
    root = S3Store(s3_bucket, "")
    assert root.url == f"s3://{s3_bucket}"
    assert keys(root) == ["elsewhere", "team/runs/jobs/j/job.json", "team/runs2/other"]
    assert root.list_dirs("") == ["team"]


def test_s3_big_upload_is_multipart_and_copy_handles_it(s3_store, s3_client, s3_bucket, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(MULTIPART_THRESHOLD * 2 + 1))
    s3_store.upload(source, "big.bin")
    etag = s3_client.head_object(Bucket=s3_bucket, Key="team/runs/big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # three parts
    s3_store.copy("big.bin", "copy.bin")
    assert s3_store.read("copy.bin").data == source.read_bytes()


def seed_in_process(bucket: str, full_keys: list[str]) -> None:
    """Put objects straight into the moto server's in-process backend: 1000 PUTs through
    HTTP take ~4 s because server and client share this process (and its GIL)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key in full_keys:
        backend.put_object(bucket, key, b"x")


def test_s3_pagination_list_list_dirs_and_delete(s3_store):
    count = 1005  # S3 pages hold 1000 keys; delete_objects takes 1000 at a time
    names = [f"many/d{i:04d}/f" for i in range(count)]
    seed_in_process(s3_store.bucket, [f"{s3_store.prefix}/{name}" for name in names])
    s3_store.write("other", b"x")
    assert keys(s3_store, "many/") == names
    assert s3_store.list_dirs("many/") == [f"d{i:04d}" for i in range(count)]
    s3_store.delete(names)
    assert keys(s3_store) == ["other"]


def test_s3_missing_bucket_is_one_clear_error(moto_reset, tmp_path):
    store = S3Store("no-such-bucket-here", "p")
    message = (
        "bucket 'no-such-bucket-here' does not exist; create it (runctl aws setup, or "
        "aws s3 mb s3://no-such-bucket-here) or fix the store URL"
    )
    (tmp_path / "f").write_bytes(b"x")
    calls = {
        "read": lambda: store.read("k"),
        "write": lambda: store.write("k", b"x"),
        "upload": lambda: store.upload(tmp_path / "f", "k"),
        "download": lambda: store.download("k", tmp_path / "g"),
        "copy": lambda: store.copy("a", "b"),
        "list": lambda: list(store.list()),
        "list_dirs": lambda: store.list_dirs(""),
        "exists": lambda: store.exists("k"),
        "delete": lambda: store.delete(["k"]),
    }
    for name, call in calls.items():
        with pytest.raises(StoreError) as info:
            call()
        assert str(info.value) == message, name
        assert not isinstance(info.value, NotFoundError), name


def test_s3_no_credentials(monkeypatch, moto_server):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StoreError) as info:
        S3Store("bucket", "p").read("k")
    assert str(info.value) == (
        "no AWS credentials found; configure them (aws configure, AWS_PROFILE or environment variables)"
    )


def test_s3_missing_profile(monkeypatch, moto_server):
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(StoreError, match="AWS profile 'no-such-profile' not found"):
        S3Store("bucket", "p").read("k")


def test_s3_unreachable_endpoint_names_it(moto_server):
    store = S3Store("bucket", "p", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StoreError) as info:
        store.read("k")
    assert str(info.value) == "cannot reach the S3 endpoint http://127.0.0.1:9 to read s3://bucket/p/k"


def test_s3_explicit_endpoint_overrides_environment(s3_bucket, moto_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    store = S3Store(s3_bucket, "p", endpoint_url=moto_server)
    store.write("k", b"v")
    assert store.read("k").data == b"v"


def test_s3_access_denied_names_key_and_permission(s3_store):
    from botocore.stub import Stubber

    with Stubber(s3_store.client) as stub:
        stub.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
        with pytest.raises(StoreError) as info:
            s3_store.read("jobs/j/job.json")
    text = str(info.value)
    assert f"{s3_store.url}/jobs/j/job.json" in text and "s3:GetObject" in text
    assert "testing" not in text  # never the credentials


def test_s3_conflict_is_precondition_failed(s3_store):
    from botocore.stub import Stubber

    with Stubber(s3_store.client) as stub:
        stub.add_client_error("put_object", "ConditionalRequestConflict", "conflict", 409)
        with pytest.raises(PreconditionFailed):
            s3_store.write("lease.json", b"x", if_none_match=True)


def test_s3_client_configuration(s3_store):
    config = s3_store.client.meta.config
    assert config.max_pool_connections >= 32
    assert config.retries["mode"] == "standard"
    assert config.retries["total_max_attempts"] == 2  # AWS_MAX_ATTEMPTS is honoured
    assert s3_store.client is s3_store.client


def test_importing_the_store_does_not_import_boto3():
    code = "import sys, runctl.store, runctl.store.s3; assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
