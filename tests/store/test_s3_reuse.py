"""Incremental snapshots on S3 (moto): a commit uploads only content no retained snapshot
holds, copies the rest server-side without reading it back, and every snapshot stays a plain
folder that ``aws s3 cp --recursive`` turns into the checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from runctl.store.snapshots import Snapshots
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

    if shutil.which("aws") is None:
        pytest.skip("the AWS CLI is not installed")
    target = tmp_path / "by-aws-cli"
    subprocess.run(["aws", "s3", "cp", "--recursive", "--only-show-errors",
                    f"s3://{s3_store.bucket}/{s3_store.prefix}/{PREFIX}00000003/", str(target)],
                   check=True, timeout=120)
    manifest = json.loads((target / "MANIFEST.json").read_bytes())
    got = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert set(got) == {f["path"] for f in manifest["files"]} | {"MANIFEST.json"}
    for f in manifest["files"]:
        assert hashlib.sha256(got[f["path"]]).hexdigest() == f["sha256"] and len(got[f["path"]]) == f["size"]
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
