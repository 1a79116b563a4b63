"""Incremental snapshots on S3 (moto): a commit uploads only content no retained snapshot
holds, copies the rest server-side without reading it back, and every snapshot stays a plain
folder that ``aws s3 cp --recursive`` turns into the checkpoint."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runctl.store.snapshots import Snapshots
from aws_cli import aws_cli_copy_of_snapshot
from s3_requests import requests_of

PREFIX = "jobs/job-1/checkpoints/"


def put(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - 3600  # old enough for the hash cache
    os.utime(path, (then, then))


@pytest.fixture
def source(tmp_path) -> Path:
    root = tmp_path / "ckpt"
    for i in range(3):
        put(root, f"shard-{i}.bin", os.urandom(100_000))
    return root


def test_a_changed_file_uploads_alone_and_a_reverted_one_uploads_nothing(s3_store, source, tmp_path):
    snaps = Snapshots(s3_store, PREFIX)
    snaps.commit(source)
    original = (source / "shard-0.bin").read_bytes()
    counts = requests_of(s3_store)
    put(source, "shard-0.bin", os.urandom(100_000))
    snaps.commit(source)
    # The changed file and the manifest; the two others copied and, carrying the sha256 their
    # upload recorded, not read back (the only GETs are manifests).
    assert counts["PutObject"] == 2 and counts.get("UploadPart", 0) == 0
    assert counts["UploadPartCopy"] == 2
    manifests = counts["GetObject"]
    counts.clear()
    put(source, "shard-0.bin", original)  # back to the content of snapshot 1 only
    info = snaps.commit(source)
    assert info.seq == 3
    assert counts["PutObject"] == 1 and counts.get("UploadPart", 0) == 0  # the manifest alone
    assert counts["UploadPartCopy"] == 3 and counts["GetObject"] <= manifests + 1

    got = aws_cli_copy_of_snapshot(s3_store, f"{PREFIX}00000003/", tmp_path / "by-aws-cli")
    assert got["shard-0.bin"] == original


def test_a_copy_source_without_its_recorded_hash_is_read_back(s3_store, s3_client, source):
    snaps = Snapshots(s3_store, PREFIX)
    snaps.commit(source)
    key = f"{s3_store.prefix}/{PREFIX}00000001/shard-1.bin"
    # Rewritten by another tool with the same bytes: the object no longer vouches for them.
    s3_client.put_object(Bucket=s3_store.bucket, Key=key, Body=(source / "shard-1.bin").read_bytes())
    counts = requests_of(s3_store)
    put(source, "shard-0.bin", os.urandom(100_000))
    snaps.commit(source)
    assert counts["GetObject"] == 2  # the latest manifest, and shard-1.bin read back to check it
    assert snaps.verify(2) == []
