"""The local side of an attempt: the folder before it starts, its environment, its argv."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from runctl.agent import workspace
from runctl.errors import UsageError
from runctl.models import CheckpointInfo, FileEntry, JobSpec
from runctl.store.hashing import sha256_file


def spec(tmp_path: Path, **changes) -> JobSpec:
    values = dict(job_id="job-1", command=("python", "train.py", "--steps", "10"), store_url="file:///s",
                  checkpoint_dir=str(tmp_path / "ckpt"), workdir=str(tmp_path))
    values.update(changes)
    return JobSpec(**values)


def snapshot_of(folder: Path, *rels: str, newest: str | None = None) -> CheckpointInfo:
    files = tuple(FileEntry(rel, (folder / rel).stat().st_size, sha256_file(folder / rel)) for rel in rels)
    return CheckpointInfo(3, "2027-01-01T00:00:00.000Z", files, "file:///s/3",
                          metadata={"newest": newest} if newest else {})


# -- ensure_writable / clear_folder -------------------------------------------------------

def test_ensure_writable_creates_the_folder_and_leaves_nothing(tmp_path):
    folder = tmp_path / "a" / "b"
    workspace.ensure_writable(folder)
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_ensure_writable_below_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(UsageError, match="not writable.*--checkpoint-dir"):
        workspace.ensure_writable(tmp_path / "afile" / "ckpt")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0500")
def test_ensure_writable_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(UsageError, match="not writable"):
        workspace.ensure_writable(ro / "ckpt")


def test_clear_folder(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "x").write_text("x")
    (tmp_path / "d" / "y").write_text("y")
    (tmp_path / "outside").write_text("keep")
    os.symlink(tmp_path / "outside", tmp_path / "d" / "link")
    workspace.clear_folder(tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []
    assert (tmp_path / "outside").read_text() == "keep"  # a symlink is removed, not followed


# -- resume_path ----------------------------------------------------------------------------

def test_resume_path_none_on_a_fresh_start(tmp_path):
    assert workspace.resume_path(tmp_path, None) is None


def test_resume_path_is_the_snapshots_newest_entry(tmp_path):
    (tmp_path / "ckpt-2.pt").write_text("2")
    (tmp_path / "checkpoint-300").mkdir()
    (tmp_path / "checkpoint-300" / "model.bin").write_text("m")
    info = snapshot_of(tmp_path, "ckpt-2.pt", "checkpoint-300/model.bin", newest="checkpoint-300")
    assert workspace.resume_path(tmp_path, info) == tmp_path / "checkpoint-300"  # a folder, as HF saves


def test_resume_path_without_metadata_takes_the_newest_file(tmp_path):
    for n, age in ((1, 30), (2, 10), (3, 20)):
        path = tmp_path / f"ckpt-{n}.pt"
        path.write_text(str(n))
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
    info = snapshot_of(tmp_path, "ckpt-1.pt", "ckpt-2.pt", "ckpt-3.pt")
    assert workspace.resume_path(tmp_path, info) == tmp_path / "ckpt-2.pt"


def test_resume_path_when_the_named_entry_is_missing(tmp_path):
    (tmp_path / "a.pt").write_text("a")
    (tmp_path / "gone.pt").write_text("g")
    info = snapshot_of(tmp_path, "a.pt", "gone.pt", newest="gone.pt")
    (tmp_path / "gone.pt").unlink()
    assert workspace.resume_path(tmp_path, info) is None


@pytest.mark.parametrize("newest", ["/etc/passwd", "../outside.pt", 42])
def test_resume_path_never_leaves_the_folder(tmp_path, newest):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (tmp_path / "outside.pt").write_text("not the job's")
    (folder / "a.pt").write_text("a")
    info = dataclasses.replace(snapshot_of(folder, "a.pt"), metadata={"newest": newest})
    assert workspace.resume_path(folder, info) == folder / "a.pt"  # the newest file the folder holds


# -- displace_strays --------------------------------------------------------------------------

def test_displace_strays_keeps_the_snapshots_files_and_moves_the_rest(tmp_path):
    folder, aside = tmp_path / "ckpt", tmp_path / "aside"
    folder.mkdir()
    (folder / "ckpt-1.pt").write_bytes(b"one")
    (folder / "sub").mkdir()
    (folder / "sub" / "state.bin").write_bytes(b"state")
    info = snapshot_of(folder, "ckpt-1.pt", "sub/state.bin")
    # After the snapshot: a newer file the store never got, and a file changed in place
    # with the same size (only the hash tells).
    (folder / "ckpt-2.pt").write_bytes(b"two")
    (folder / "sub" / "state.bin").write_bytes(b"STATE")

    moved = workspace.displace_strays(folder, info, aside)

    assert sorted(moved) == ["ckpt-2.pt", "sub/state.bin"]
    assert (folder / "ckpt-1.pt").read_bytes() == b"one"
    assert not (folder / "ckpt-2.pt").exists() and not (folder / "sub" / "state.bin").exists()
    assert (aside / "ckpt-2.pt").read_bytes() == b"two"
    assert (aside / "sub" / "state.bin").read_bytes() == b"STATE"


def test_displace_strays_on_a_folder_that_matches_moves_nothing(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"a")
    assert workspace.displace_strays(tmp_path, snapshot_of(tmp_path, "a.pt"), tmp_path / "aside") == []
    assert not (tmp_path / "aside").exists()


# -- environment and argv ------------------------------------------------------------------------

def test_attempt_environment(tmp_path):
    base = {"PATH": "/usr/bin", "HOME": "/root", "RUNCTL_RESUME_FROM": "/stale/from/an/outer/run"}
    job = spec(tmp_path, env={"WANDB_MODE": "offline"})
    env = workspace.attempt_environment(base, job, attempt=2, resume=None,
                                        interrupt_file=tmp_path / "interrupt-2.json",
                                        progress_file=tmp_path / "progress-2.json")
    assert env["RUNCTL_CHECKPOINT_DIR"] == env["TRAINCTL_CHECKPOINT_DIR"] == job.checkpoint_dir
    assert "RUNCTL_RESUME_FROM" not in env  # a fresh start: the stale value is gone
    assert env["RUNCTL_JOB_ID"] == "job-1"
    assert env["RUNCTL_ATTEMPT"] == "2"
    assert env["RUNCTL_INTERRUPT_FILE"] == str(tmp_path / "interrupt-2.json")
    assert env["RUNCTL_PROGRESS_FILE"] == str(tmp_path / "progress-2.json")
    assert env["PATH"] == "/usr/bin" and env["WANDB_MODE"] == "offline"
    assert base["RUNCTL_RESUME_FROM"] == "/stale/from/an/outer/run"  # the base is not changed


def test_attempt_environment_when_resuming(tmp_path):
    resume = tmp_path / "ckpt" / "ckpt-2.pt"
    env = workspace.attempt_environment({"RUNCTL_RESUME_FROM": "/stale"}, spec(tmp_path), attempt=1, resume=resume,
                                        interrupt_file=tmp_path / "i", progress_file=tmp_path / "p")
    assert env["RUNCTL_RESUME_FROM"] == str(resume)


def test_the_job_env_cannot_override_runctls_variables(tmp_path):
    job = spec(tmp_path, env={"RUNCTL_ATTEMPT": "99", "RUNCTL_CHECKPOINT_DIR": "/elsewhere"})
    env = workspace.attempt_environment({}, job, attempt=0, resume=None,
                                        interrupt_file=tmp_path / "i", progress_file=tmp_path / "p")
    assert env["RUNCTL_ATTEMPT"] == "0" and env["RUNCTL_CHECKPOINT_DIR"] == job.checkpoint_dir


def test_command_for(tmp_path):
    job = spec(tmp_path, resume_args=("--resume", "{checkpoint}", "--tag=from:{checkpoint}"))
    assert workspace.command_for(job, None) == ["python", "train.py", "--steps", "10"]
    resume = Path("/ckpt/step 5.pt")
    assert workspace.command_for(job, resume) == [
        "python", "train.py", "--steps", "10", "--resume", "/ckpt/step 5.pt", "--tag=from:/ckpt/step 5.pt",
    ]
    assert workspace.command_for(spec(tmp_path), resume) == ["python", "train.py", "--steps", "10"]
