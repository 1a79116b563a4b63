"""`runctl checkpoint list|info|verify|restore|prune`, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from runctl.cli import cli
from runctl.errors import IntegrityError, NotFoundError, UsageError
from runctl.store import open_store
from runctl.store.snapshots import Snapshots

JOB = "train-abc123"
PREFIX = f"jobs/{JOB}/checkpoints/"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def make_snapshots(store, tmp_path: Path, count: int = 3, job: str = JOB) -> Snapshots:
    snaps = Snapshots(store, f"jobs/{job}/checkpoints/")
    source = tmp_path / f"src-{job}"
    (source / "opt").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (source / "model.pt").write_bytes(bytes([i]) * (1000 * (i + 1)))
        (source / "opt" / "state.bin").write_bytes(b"state")
        snaps.commit(source, metadata={"step": 100 * (i + 1)})
    return snaps


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "240")  # rich tables wide enough not to wrap
    return tmp_path


def test_list_by_store_and_job_and_by_url(any_store, here):
    make_snapshots(any_store, here)
    for args in (["--store", any_store.url, "--job", JOB], [f"{any_store.url}/jobs/{JOB}"],
                 [f"{any_store.url}/jobs/{JOB}/checkpoints/"], [any_store.url, "--job", JOB]):
        result = run("checkpoint", "list", *args, "-o", "json")
        assert result.exit_code == 0, (args, result.output)
        listed = json.loads(result.stdout)
        assert [s["seq"] for s in listed] == [1, 2, 3]
        assert listed[2]["files"] == 2 and listed[2]["total_bytes"] == 3005
        assert listed[2]["metadata"] == {"step": 300}
        assert listed[2]["url"] == f"{any_store.url.rstrip('/')}/{PREFIX}00000003"

    result = run("checkpoint", "list", "--store", any_store.url, "--job", JOB)
    assert result.exit_code == 0
    assert "seq" in result.stdout and "2.9 KiB" in result.stdout and "2026-" in result.stdout


def test_default_store_is_dot_runctl_then_config(here, tmp_path):
    make_snapshots(open_store(str(here / ".runctl" / "store")), tmp_path, count=1)
    result = run("checkpoint", "list", "--job", JOB, "-o", "json")
    assert result.exit_code == 0, result.output
    assert [s["seq"] for s in json.loads(result.stdout)] == [1]

    elsewhere = tmp_path / "elsewhere"
    make_snapshots(open_store(str(elsewhere)), tmp_path, count=2)
    config = tmp_path / "cfg.toml"
    config.write_text(f'[checkpoint]\nstore = "{elsewhere}"\n')
    result = run("--config", str(config), "checkpoint", "list", "--job", JOB, "-o", "json")
    assert result.exit_code == 0, result.output
    assert [s["seq"] for s in json.loads(result.stdout)] == [1, 2]


def test_list_empty_and_usage_errors(here):
    store = open_store(str(here / "store"))
    result = run("checkpoint", "list", "--store", str(here / "store"), "--job", JOB)
    assert result.exit_code == 0 and "no complete checkpoint snapshots at" in result.stdout

    make_snapshots(store, here, count=1, job="other-job")
    for args, message in [
        (["--store", "x", "s3://bucket/jobs"], "either as TARGET or with --store"),
        (["--store", str(here / "store")], "which job? Use --job JOB_ID or a TARGET URL ending in /jobs/JOB_ID "
                                           f"(jobs in {store.url}: other-job)"),
        ([str(here / "store")], "is a store, not a job's checkpoints; add --job JOB_ID"),
        (["--job", "../../etc"], "'../../etc' is not a job id"),
    ]:
        result = run("checkpoint", "list", *args)
        assert isinstance(result.exception, UsageError), (args, result.output)
        assert message in str(result.exception)
    result = run("checkpoint", "info", "--job", JOB, "1", "2")
    assert isinstance(result.exception, UsageError) and "more than one SEQ" in str(result.exception)
    result = run("checkpoint", "prune", "--job", JOB, "--keep-last-n", "0")
    assert result.exit_code == 2 and "0 is not in the range x>=1" in result.output


def test_info_latest_and_by_seq(any_store, here):
    snaps = make_snapshots(any_store, here)
    target = f"{any_store.url}/jobs/{JOB}"
    result = run("checkpoint", "info", target, "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(snaps.get(3).to_dict()))

    result = run("checkpoint", "info", target, "1")
    assert result.exit_code == 0, result.output
    first = snaps.get(1)
    assert f"snapshot 1 at {first.url}" in result.stdout
    assert '{"step": 100}' in result.stdout
    for f in first.files:
        assert f.path in result.stdout and f.sha256 in result.stdout

    result = run("checkpoint", "info", target, "9")
    assert isinstance(result.exception, NotFoundError) and result.exception.exit_code == 3
    assert "no complete checkpoint snapshot 9" in str(result.exception)
    result = run("checkpoint", "info", "--store", any_store.url, "--job", "nobody")
    assert isinstance(result.exception, NotFoundError)


def test_verify_ok_and_corrupted(any_store, here):
    make_snapshots(any_store, here)
    target = f"{any_store.url}/jobs/{JOB}"
    result = run("checkpoint", "verify", target)
    assert result.exit_code == 0, result.output
    assert result.stdout == "snapshot 3: ok (2 files, 2.9 KiB)\n"
    result = run("checkpoint", "verify", target, "--all", "-o", "json")
    assert result.exit_code == 0 and [r["ok"] for r in json.loads(result.stdout)] == [True, True, True]

    any_store.write(PREFIX + "00000002/model.pt", b"\x01" * 1999 + b"\x00")  # same size, other bytes
    result = run("checkpoint", "verify", target, "--all")
    assert isinstance(result.exception, IntegrityError) and result.exception.exit_code == 3
    assert "1 of 3 snapshot(s) failed verification" in str(result.exception)
    assert "snapshot 2: 1 problem(s)\n  model.pt: sha256 expected" in result.stdout
    assert "snapshot 3: ok" in result.stdout

    result = run("checkpoint", "verify", target, "2", "-o", "json")
    report = json.loads(result.stdout)
    assert isinstance(result.exception, IntegrityError)
    assert report[0]["seq"] == 2 and report[0]["ok"] is False and "model.pt" in report[0]["problems"][0]
    result = run("checkpoint", "verify", target, "2", "--all")
    assert isinstance(result.exception, UsageError)


@pytest.mark.parametrize("newest", ["/etc/passwd", "../x", 42])
def test_verify_reports_a_manifest_whose_newest_leads_out_of_the_snapshot(any_store, here, newest):
    make_snapshots(any_store, here)
    key = PREFIX + "00000003/MANIFEST.json"
    manifest = json.loads(any_store.read(key).data)
    manifest["metadata"]["newest"] = newest
    any_store.write(key, json.dumps(manifest).encode())
    target = f"{any_store.url}/jobs/{JOB}"

    for args in ((), ("--all",), ("3",)):
        result = run("checkpoint", "verify", target, *args, "-o", "json")
        assert isinstance(result.exception, IntegrityError), (args, result.output)
        assert result.exception.exit_code == 3
        report = {r["seq"]: r for r in json.loads(result.stdout)}
        assert report[3]["ok"] is False and "metadata.newest" in report[3]["problems"][0], args
    result = run("checkpoint", "verify", target, "--all")
    assert "snapshot 3: 1 problem(s)" in result.stdout and "snapshot 2: ok" in result.stdout


def test_restore_latest_by_job_id_and_a_given_seq(any_store, here):
    make_snapshots(any_store, here)
    dest = here / "eval"
    result = run("checkpoint", "restore", JOB, "--store", any_store.url, "--to", str(dest), "-o", "json")
    assert result.exit_code == 0, result.output
    restored = json.loads(result.stdout)
    assert restored["seq"] == 3 and restored["files"] == 2 and restored["total_bytes"] == 3005
    assert (dest / "model.pt").read_bytes() == bytes([2]) * 3000 and (dest / "opt" / "state.bin").exists()

    result = run("checkpoint", "restore", f"{any_store.url}/jobs/{JOB}", "1", "--to", str(dest))
    assert result.exit_code == 0, result.output
    assert "restored snapshot 1 (2 files, 1005 B) into" in result.stdout
    assert (dest / "model.pt").read_bytes() == bytes([0]) * 1000


def test_restore_refuses_a_missing_job_and_snapshot(here):
    make_snapshots(open_store(str(here / ".runctl" / "store")), here, count=1)
    result = run("checkpoint", "restore", "no-such-job", "--to", str(here / "eval"))
    assert isinstance(result.exception, NotFoundError), result.output
    assert "no complete checkpoint snapshot at" in str(result.exception)
    result = run("checkpoint", "restore", JOB, "7", "--to", str(here / "eval"))
    assert isinstance(result.exception, NotFoundError), result.output
    assert not (here / "eval" / "model.pt").exists()
    result = run("checkpoint", "restore", JOB)
    assert result.exit_code == 2 and "Missing option '--to'" in result.output


def test_prune(any_store, here):
    snaps = make_snapshots(any_store, here, count=4)
    args = ("checkpoint", "prune", "--store", any_store.url, "--job", JOB, "--keep-last-n", "2")
    result = run(*args, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would remove 2 snapshot folder(s)" in result.stdout and ": 1, 2\nkept 3, 4\n" in result.stdout
    assert [i.seq for i in snaps.list()] == [1, 2, 3, 4]

    result = run(*args, "-o", "json")
    assert json.loads(result.stdout) == {"url": snaps.url, "removed": [1, 2], "kept": [3, 4], "dry_run": False}
    assert [i.seq for i in snaps.list()] == [3, 4]
    result = run(*args)
    assert result.stdout == f"nothing to prune at {snaps.url} (keeping 3, 4)\n"


def test_console_script_exit_code_and_message(here):
    store = open_store(str(here / "store"))
    make_snapshots(store, here, count=1)
    store.delete([PREFIX + "00000001/opt/state.bin"])
    runctl = Path(sys.executable).with_name("runctl")
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([str(runctl), "checkpoint", "verify", str(here / "store" / "jobs" / JOB)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "snapshot 1: 1 problem(s)\n  opt/state.bin: missing from the store\n"
    assert done.stderr.strip().startswith("runctl: error: 1 of 1 snapshot(s) failed verification")
