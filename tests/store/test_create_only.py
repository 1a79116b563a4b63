"""Create-only uploads and copies (``if_none_match=True``): a writer can never replace an
object another writer already put at that key (both stores; S3 also multipart)."""

from __future__ import annotations

import hashlib
import os

import pytest

from runctl.errors import IntegrityError, PreconditionFailed
from runctl.models import FileEntry

MiB = 1024 * 1024


def one_byte_off(data: bytes) -> bytes:
    """Other content of the same size, whatever random bytes `data` holds (replacing the last
    byte with a fixed one leaves one payload in 256 unchanged)."""
    return data[:-1] + bytes([data[-1] ^ 1])


def entry(data: bytes) -> FileEntry:
    return FileEntry("x", len(data), hashlib.sha256(data).hexdigest())


def no_temporaries(store, tmp_path) -> None:
    if hasattr(store, "root"):
        leftovers = [name for _, _, names in os.walk(store.root) for name in names if ".runctl-tmp-" in name]
        assert leftovers == []


def test_create_only_upload(any_store, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"first writer")
    second.write_bytes(b"second writer, longer")
    sent: list[int] = []
    any_store.upload(first, "ck/1/model.pt", if_none_match=True, progress=sent.append)
    assert any_store.read("ck/1/model.pt").data == b"first writer" and sum(sent) == 12
    with pytest.raises(PreconditionFailed):
        any_store.upload(second, "ck/1/model.pt", if_none_match=True)
    assert any_store.read("ck/1/model.pt").data == b"first writer"
    no_temporaries(any_store, tmp_path)
    any_store.upload(second, "ck/1/model.pt")  # without the condition: replaced, as before
    assert any_store.read("ck/1/model.pt").data == b"second writer, longer"


@pytest.mark.parametrize("checked", [False, True])
def test_create_only_copy(any_store, checked):
    any_store.write("ck/1/a.bin", b"content of a")
    any_store.write("ck/2/a.bin", b"another writer's a")
    expect = entry(b"content of a") if checked else None
    any_store.copy("ck/1/a.bin", "ck/3/a.bin", expect=expect, if_none_match=True)
    assert any_store.read("ck/3/a.bin").data == b"content of a"
    with pytest.raises(PreconditionFailed):
        any_store.copy("ck/1/a.bin", "ck/2/a.bin", expect=expect, if_none_match=True)
    assert any_store.read("ck/2/a.bin").data == b"another writer's a"
    assert sorted(o.key for o in any_store.list("ck/")) == ["ck/1/a.bin", "ck/2/a.bin", "ck/3/a.bin"]


def test_create_only_copy_of_unexpected_content_leaves_nothing(any_store):
    any_store.write("ck/1/a.bin", b"content of a")
    with pytest.raises(IntegrityError):
        any_store.copy("ck/1/a.bin", "ck/2/a.bin", expect=entry(b"content of b"), if_none_match=True)
    assert not any_store.exists("ck/2/a.bin")


def test_create_only_copy_of_an_empty_object(any_store):
    any_store.write("ck/1/empty", b"")
    any_store.copy("ck/1/empty", "ck/2/empty", expect=entry(b""), if_none_match=True)
    assert any_store.read("ck/2/empty").data == b""


# -- S3: multipart uploads and copies ------------------------------------------------------
@pytest.fixture
def small_parts(s3_store):
    """Multipart from 5 MiB (S3's smallest part) for uploads and copies alike."""
    for config in (s3_store.transfer_config, s3_store._copy_settings()):
        config.multipart_threshold = config.multipart_chunksize = 5 * MiB
    return s3_store


def open_uploads(s3_client, bucket) -> list:
    return s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_s3_create_only_multipart_upload(small_parts, s3_client, s3_bucket, tmp_path):
    store = small_parts
    big, other = tmp_path / "big.bin", tmp_path / "other.bin"
    big.write_bytes(os.urandom(11 * MiB))
    other.write_bytes(os.urandom(11 * MiB))
    sent: list[int] = []
    store.upload(big, "ck/1/model.pt", if_none_match=True, progress=sent.append)
    head = s3_client.head_object(Bucket=s3_bucket, Key="team/runs/ck/1/model.pt")
    assert head["ETag"].strip('"').endswith("-3") and sum(sent) == 11 * MiB
    with pytest.raises(PreconditionFailed):
        store.upload(other, "ck/1/model.pt", if_none_match=True)
    assert store.read("ck/1/model.pt").data == big.read_bytes()
    assert open_uploads(s3_client, s3_bucket) == []


def test_s3_create_only_multipart_copy(small_parts, s3_client, s3_bucket, tmp_path):
    store = small_parts
    payload = os.urandom(11 * MiB)
    (tmp_path / "big.bin").write_bytes(payload)
    store.upload(tmp_path / "big.bin", "ck/1/model.pt")
    store.write("ck/2/model.pt", b"another writer's")
    store.copy("ck/1/model.pt", "ck/3/model.pt", expect=entry(payload), if_none_match=True)
    assert store.read("ck/3/model.pt").data == payload
    with pytest.raises(PreconditionFailed):
        store.copy("ck/1/model.pt", "ck/2/model.pt", expect=entry(payload), if_none_match=True)
    assert store.read("ck/2/model.pt").data == b"another writer's"
    with pytest.raises(IntegrityError):
        store.copy("ck/1/model.pt", "ck/4/model.pt", expect=entry(one_byte_off(payload)), if_none_match=True)
    assert not store.exists("ck/4/model.pt")
    assert open_uploads(s3_client, s3_bucket) == []


def test_s3_refused_small_upload_and_copy_leave_no_upload_open(s3_store, s3_client, s3_bucket, tmp_path):
    (tmp_path / "f").write_bytes(b"mine")
    s3_store.write("ck/1/f", b"theirs")
    with pytest.raises(PreconditionFailed):
        s3_store.upload(tmp_path / "f", "ck/1/f", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        s3_store.copy("ck/1/f", "ck/1/f", if_none_match=True)
    assert s3_store.read("ck/1/f").data == b"theirs"
    assert open_uploads(s3_client, s3_bucket) == []


def test_s3_conflict_on_completion_is_precondition_failed(s3_store):
    """409 ConditionalRequestConflict (a concurrent conditional write won) fails like 412."""
    from botocore.stub import ANY, Stubber

    s3_store.write("ck/1/f", b"x")
    s3_store.client  # noqa: B018
    with Stubber(s3_store.client) as stub:
        stub.add_response("head_object", {"ContentLength": 1}, {"Bucket": ANY, "Key": ANY})
        stub.add_response("create_multipart_upload", {"UploadId": "u1"}, None)
        stub.add_response("upload_part_copy", {"CopyPartResult": {"ETag": '"e"'}}, None)
        stub.add_client_error("complete_multipart_upload", "ConditionalRequestConflict", "conflict", 409)
        stub.add_response("abort_multipart_upload", {}, None)
        with pytest.raises(PreconditionFailed):
            s3_store.copy("ck/1/f", "ck/2/f", if_none_match=True)
        stub.assert_no_pending_responses()


# -- a retry that meets the write's own landed first try ----------------------------------
def landed_then_refused(client, operation: str, *, retry: bool):
    """Make ``operation`` land, then fail as a retry after a lost answer does: called once
    more for real (``retry``) or answered 412 outright."""
    from botocore.exceptions import ClientError

    real = getattr(client, operation)

    def call(**kwargs):
        real(**kwargs)
        if retry:
            kwargs["Body"].seek(0)
            return real(**kwargs)
        raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "At least one of the pre-conditions"
                                     " you specified did not hold"}, "ResponseMetadata": {"HTTPStatusCode": 412}},
                          operation)

    return call


def test_s3_a_retry_refused_by_its_own_landed_upload_succeeds(small_parts, s3_client, s3_bucket, monkeypatch,
                                                              tmp_path):
    store = small_parts
    (tmp_path / "small").write_bytes(b"mine")
    (tmp_path / "big").write_bytes(os.urandom(6 * MiB))
    monkeypatch.setattr(store.client, "put_object", landed_then_refused(store.client, "put_object", retry=True))
    monkeypatch.setattr(store.client, "complete_multipart_upload",
                        landed_then_refused(store.client, "complete_multipart_upload", retry=False))
    store.upload(tmp_path / "small", "ck/1/small", if_none_match=True)
    store.upload(tmp_path / "big", "ck/1/big", if_none_match=True)
    store.copy("ck/1/small", "ck/2/small", expect=entry(b"mine"), if_none_match=True)
    assert store.read("ck/1/small").data == b"mine" and store.read("ck/2/small").data == b"mine"
    assert store.read("ck/1/big").data == (tmp_path / "big").read_bytes()
    # Another writer's object is still refused, whatever the retries.
    with pytest.raises(PreconditionFailed):
        store.upload(tmp_path / "big", "ck/1/small", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.upload(tmp_path / "small", "ck/1/big", if_none_match=True)
    assert store.read("ck/1/small").data == b"mine"
    assert open_uploads(s3_client, s3_bucket) == []


# -- S3: checked uploads (the object carries its sha256) and the copies that trust it -----
def test_s3_checked_upload_sends_its_sha256_for_s3_to_check(s3_store, tmp_path):
    """moto does not check a request's x-amz-checksum-sha256 (AWS does: BadDigest): the
    request's shape is shown with botocore's Stubber."""
    import base64

    from botocore.stub import ANY, Stubber

    from runctl.errors import StoreError

    data = b"checkpoint bytes"
    (tmp_path / "f").write_bytes(data)
    s3_store.client  # noqa: B018
    sha = hashlib.sha256(data).hexdigest()
    expected = {"Bucket": s3_store.bucket, "Key": "team/runs/ck/1/f", "Body": ANY, "ContentLength": len(data),
                "IfNoneMatch": "*", "Metadata": {"runctl-write": ANY, "runctl-sha256": sha},
                "ChecksumSHA256": base64.b64encode(bytes.fromhex(sha)).decode()}
    with Stubber(s3_store.client) as stub:
        stub.add_response("put_object", {"ETag": '"e"'}, expected)
        s3_store.upload_checked(tmp_path / "f", "ck/1/f", expect=entry(data))
        stub.add_client_error("put_object", "BadDigest", "The sha256 you specified did not match", 400,
                              expected_params=expected)
        with pytest.raises(StoreError, match="BadDigest|did not match"):
            s3_store.upload_checked(tmp_path / "f", "ck/1/f", expect=entry(data))
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("size", [1000, 11 * MiB])
def test_s3_a_copy_of_a_checked_upload_is_not_read_back(small_parts, s3_client, s3_bucket, tmp_path, size):
    store = small_parts
    payload = os.urandom(size)
    (tmp_path / "f").write_bytes(payload)
    store.upload_checked(tmp_path / "f", "ck/1/f", expect=entry(payload))
    calls: list[str] = []
    store.client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    store.copy("ck/1/f", "ck/2/f", expect=entry(payload), if_none_match=True)
    assert "GetObject" not in calls
    assert store.read("ck/2/f").data == payload
    head = s3_client.head_object(Bucket=s3_bucket, Key="team/runs/ck/2/f")
    assert head["Metadata"]["runctl-sha256"] == hashlib.sha256(payload).hexdigest()  # carried on
    with pytest.raises(IntegrityError):  # the recorded hash is the expected content's, or nothing is trusted
        store.copy("ck/1/f", "ck/3/f", expect=entry(one_byte_off(payload)), if_none_match=True)
    assert not store.exists("ck/3/f") and open_uploads(s3_client, s3_bucket) == []
