"""Checked downloads from S3 (``runctl.store.s3_downloads``), through ``Snapshots.restore``:
one GET per file, no HEAD, hashed as written, on moto."""

from __future__ import annotations

import os

import pytest

from runctl.errors import IntegrityError
from runctl.store import s3_downloads, snapshot_restore
from runctl.store.snapshots import Snapshots
from s3_requests import requests_of

PREFIX = "jobs/job-1/checkpoints/"


@pytest.fixture
def committed(s3_store, tmp_path):
    source = tmp_path / "ckpt"
    files = {"model.pt": os.urandom(200_000), "optim/state.bin": os.urandom(3000), "empty": b""}
    for rel, data in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    Snapshots(s3_store, PREFIX).commit(source)
    return files


def test_a_restore_is_one_get_per_file_and_reads_nothing_again(s3_store, committed, tmp_path, monkeypatch):
    def no_second_read(path):
        raise AssertionError(f"{path} read again to hash it")

    monkeypatch.setattr(snapshot_restore, "sha256_file", no_second_read)
    monkeypatch.setattr("runctl.store.base.sha256_file", no_second_read)
    counts = requests_of(s3_store)
    Snapshots(s3_store, PREFIX).restore(1, tmp_path / "back")
    assert {rel: (tmp_path / "back" / rel).read_bytes() for rel in committed} == committed
    # The manifest (read twice: the latest, then the one restored) and one GET per file.
    assert counts.get("HeadObject", 0) == 0
    assert counts["GetObject"] == len(committed) + 1


def test_large_objects_go_through_one_transfer_manager(s3_store, committed, tmp_path, monkeypatch):
    monkeypatch.setattr(s3_downloads, "STREAM_MAX", 1000)  # model.pt and state.bin go the ranged way
    snaps = Snapshots(s3_store, PREFIX)
    snaps.restore(1, tmp_path / "back")
    assert {rel: (tmp_path / "back" / rel).read_bytes() for rel in committed} == committed
    manager = s3_store._transfer_manager()
    snaps.restore(1, tmp_path / "again")
    assert s3_store._transfer_manager() is manager


@pytest.mark.parametrize("stream_max", [s3_downloads.STREAM_MAX, 0])
def test_an_object_that_does_not_match_its_manifest_is_refused(s3_store, s3_client, committed, tmp_path,
                                                              monkeypatch, stream_max):
    monkeypatch.setattr(s3_downloads, "STREAM_MAX", stream_max)
    key = f"{s3_store.prefix}/{PREFIX}00000001/optim/state.bin"
    s3_client.put_object(Bucket=s3_store.bucket, Key=key, Body=b"y" * 3000)  # same size, other bytes
    with pytest.raises(IntegrityError, match="optim/state.bin of snapshot 1 does not match its manifest"):
        Snapshots(s3_store, PREFIX).restore(1, tmp_path / "back")
    left = [p for p in (tmp_path / "back").rglob("*") if p.is_file()]
    assert left == [], "nothing of a refused restore is left in the folder"
