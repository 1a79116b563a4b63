"""runctl.checkpoints: a job's latest snapshot fetched from outside the job."""

from __future__ import annotations

import os

import pytest

from runctl.checkpoints import fetch_latest
from runctl.errors import NotFoundError, UsageError
from runctl.store import open_store
from runctl.store.snapshots import Snapshots

JOB = "train-abc123"


def commit(store, source, step: int, job: str = JOB):
    source.mkdir(exist_ok=True)
    (source / f"ckpt-{step:04d}.json").write_text(f'{{"step": {step}}}')
    return Snapshots(store, f"jobs/{job}/checkpoints/").commit(source, metadata={"newest": f"ckpt-{step:04d}.json"})


def test_fetch_by_job_id_from_the_default_store_then_a_newer_snapshot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store(str(tmp_path / ".runctl" / "store"))
    commit(store, tmp_path / "src", 100)
    fetched = fetch_latest(JOB, tmp_path / "eval")
    assert fetched.seq == 1 and fetched.newest == tmp_path / "eval" / "ckpt-0100.json"
    assert fetched.newest.read_text() == '{"step": 100}'
    first = os.stat(fetched.newest).st_ino

    commit(store, tmp_path / "src", 200)
    fetched = fetch_latest(JOB, tmp_path / "eval")
    assert fetched.seq == 2 and fetched.newest.name == "ckpt-0200.json"
    # The unchanged file was kept as it was, not downloaded again.
    assert os.stat(tmp_path / "eval" / "ckpt-0100.json").st_ino == first


def test_fetch_by_url_on_s3_and_by_seq(s3_store, tmp_path):
    commit(s3_store, tmp_path / "src", 100)
    commit(s3_store, tmp_path / "src", 200)
    fetched = fetch_latest(f"{s3_store.url}/jobs/{JOB}", tmp_path / "eval", seq=1)
    assert fetched.seq == 1 and fetched.newest.name == "ckpt-0100.json"
    assert fetch_latest(JOB, tmp_path / "latest", store=s3_store.url).newest.name == "ckpt-0200.json"


def test_no_snapshot_and_bad_names_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFoundError, match="no complete checkpoint snapshot at"):
        fetch_latest(JOB, tmp_path / "eval")
    commit(open_store(str(tmp_path / "store")), tmp_path / "src", 100)
    with pytest.raises(UsageError, match=f"is a store, not a job's checkpoints; add --job JOB_ID .*{JOB}"):
        fetch_latest(str(tmp_path / "store"), tmp_path / "eval")
    assert not (tmp_path / "eval").exists()
