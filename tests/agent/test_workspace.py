"""The local side of an attempt: the folder before it starts, its environment, its argv."""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from pathlib import Path

import pytest

from runctl.agent import workspace
from runctl.errors import RunctlError, UsageError
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


# -- ensure_writable -------------------------------------------------------

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


# -- where a checkpoint folder may be ---------------------------------------------------------

HOME, WORK = Path("/home/u"), Path("/home/u/proj")


def problem(folder: str, *, store_root: str | None = "/home/u/proj/.runctl/store", job_files=("/home/u/proj/train.py",)):
    return workspace.checkpoint_folder_problem(Path(folder), home=HOME, workdirs=(WORK, WORK / "sub"),
                                               store_root=Path(store_root) if store_root else None,
                                               job_files=[Path(f) for f in job_files])


@pytest.mark.parametrize(("folder", "why"), [
    ("/", "is a system folder"),
    ("/etc", "is a system folder"),
    ("/etc/ssl", "is a system folder"),
    ("/usr/local/lib", "is a system folder"),
    ("/var", "is a system folder"),
    ("/tmp", "is a system folder"),
    ("/dev/shm", "is a system folder"),
    ("/opt", "is a system folder"),
    ("/home", "is a system folder"),
    ("/home/u", "is the home folder"),
    ("/home/u/proj", "is the job's working folder (the project)"),
    ("/home/u/proj/sub", "is the job's working folder (the project)"),
    ("/home/u/proj/.runctl", "holds the checkpoint store /home/u/proj/.runctl/store"),
    ("/home/u/proj/.runctl/store/jobs/j", "is inside the checkpoint store /home/u/proj/.runctl/store"),
    ("/home/u/proj/.runctl/store", "holds the checkpoint store /home/u/proj/.runctl/store"),
])
def test_checkpoint_folders_that_are_refused(folder, why):
    assert problem(folder) == why


def test_checkpoint_folders_that_contain_the_home_the_project_or_the_script():
    assert problem("/srv/data/u", store_root=None) is None
    assert workspace.checkpoint_folder_problem(Path("/root"), home=Path("/root"), workdirs=(), store_root=None,
                                               job_files=()) == "is the home folder"
    assert workspace.checkpoint_folder_problem(Path("/srv/x"), home=None, workdirs=(), store_root=None,
                                               job_files=()) is None
    assert workspace.checkpoint_folder_problem(Path("/data"), home=Path("/data/u"), workdirs=(), store_root=None,
                                               job_files=()) == "contains the home folder /data/u"
    assert workspace.checkpoint_folder_problem(Path("/w"), home=HOME, workdirs=(Path("/w/p"),), store_root=None,
                                               job_files=()) == "contains the job's working folder /w/p (the project)"
    assert problem("/srv/code", job_files=("/srv/code/train.py",)) == "holds the job's own file /srv/code/train.py"


@pytest.mark.parametrize("folder", ["/home/u/proj/checkpoints", "/home/u/proj/.runctl/jobs/j/checkpoints",
                                    "/home/u/ckpt", "/tmp/job-1", "/dev/shm/job-1", "/opt/ml/checkpoints",
                                    "/var/tmp/job", "/mnt/disk/ckpt"])
def test_checkpoint_folders_that_are_fine(folder):
    assert problem(folder) is None
    assert problem(folder, store_root=None) is None


def test_check_checkpoint_folder_names_the_folder_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("")
    job = spec(tmp_path, checkpoint_dir=str(tmp_path), command=("python", "train.py"))
    with pytest.raises(UsageError, match=f"checkpoint folder {tmp_path} is the job's working folder.*--checkpoint-dir"):
        workspace.check_checkpoint_folder(job)
    elsewhere = tmp_path / "code"
    elsewhere.mkdir()
    (elsewhere / "train.py").write_text("")
    job = spec(tmp_path, checkpoint_dir=str(elsewhere), workdir=str(tmp_path / "proj"),
               command=("python", str(elsewhere / "train.py")))
    with pytest.raises(UsageError, match="holds the job's own file .*train.py"):
        workspace.check_checkpoint_folder(job)
    workspace.check_checkpoint_folder(spec(tmp_path))  # tmp_path/ckpt: fine


# -- whose files ---------------------------------------------------------------------------------

def fingerprint(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


def test_a_folder_with_a_foreign_file_is_refused_and_left_as_it_is(tmp_path):
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "notes.txt").write_text("mine")
    before = fingerprint(folder / "sub" / "notes.txt")
    for snapshot in (None, snapshot_of(tmp_path, "ckpt/sub/notes.txt")):  # a snapshot of other paths
        with pytest.raises(UsageError, match=r"holds 1 file\(s\) runctl did not write for job job-1: sub/notes.txt"):
            workspace.claim_folder(folder, "job-1", snapshot)
    assert fingerprint(folder / "sub" / "notes.txt") == before
    assert sorted(p.name for p in folder.iterdir()) == ["sub"]  # no mark either


def test_a_symlink_is_foreign_too(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    os.symlink(tmp_path, folder / "data")
    with pytest.raises(UsageError, match="did not write for job job-1: data"):
        workspace.refuse_a_foreign_folder(folder, "job-1", None)


def test_another_jobs_folder_is_refused_even_when_empty(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    workspace.claim_folder(folder, "job-a", None)
    with pytest.raises(UsageError, match="belongs to job job-a; give job job-b .*--checkpoint-dir"):
        workspace.claim_folder(folder, "job-b", None)
    (folder / "ckpt-1.pt").write_text("a's")
    with pytest.raises(UsageError, match=r"belongs to job job-a \(it holds ckpt-1.pt\)"):
        workspace.refuse_a_foreign_folder(folder, "job-b", None)
    assert workspace.folder_owner(folder) == "job-a" and (folder / "ckpt-1.pt").read_text() == "a's"


def test_of_two_jobs_claiming_one_empty_folder_at_once_one_wins(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    checked = workspace.refuse_a_foreign_folder

    def and_meanwhile(*args):
        checked(*args)
        (folder / workspace.JOB_MARK).write_text("job-b\n")  # the other job's claim lands in between

    monkeypatch.setattr(workspace, "refuse_a_foreign_folder", and_meanwhile)
    with pytest.raises(UsageError, match="claimed by job job-b"):
        workspace.claim_folder(folder, "job-a", None)
    assert workspace.folder_owner(folder) == "job-b"


def test_a_folder_holding_the_latest_snapshot_as_it_is_is_the_jobs(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "ckpt-1.pt").write_bytes(b"one")  # e.g. put there by runctl checkpoint restore
    assert workspace.claim_folder(folder, "job-1", snapshot_of(folder, "ckpt-1.pt")) == []
    assert workspace.folder_owner(folder) == "job-1"
    assert workspace.JOB_MARK not in workspace.scan_folder(folder)  # never part of a snapshot


def test_claim_returns_the_jobs_own_files_the_snapshot_lacks(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert workspace.claim_folder(folder, "job-1", None) == []
    (folder / "ckpt-1.pt").write_bytes(b"one")
    (folder / "sub").mkdir()
    (folder / "sub" / "state.bin").write_bytes(b"state")
    info = snapshot_of(folder, "ckpt-1.pt", "sub/state.bin")
    # After the snapshot: a newer file the store never got, and a file changed in place
    # with the same size (only the hash tells).
    (folder / "ckpt-2.pt").write_bytes(b"two")
    (folder / "sub" / "state.bin").write_bytes(b"STATE")
    assert workspace.claim_folder(folder, "job-1", info) == ["ckpt-2.pt", "sub/state.bin"]
    assert workspace.claim_folder(folder, "job-1", None) == ["ckpt-1.pt", "ckpt-2.pt", "sub/state.bin"]


def test_set_aside_moves_the_files_keeping_their_paths(tmp_path):
    folder, aside = tmp_path / "ckpt", tmp_path / "aside"
    (folder / "sub").mkdir(parents=True)
    (folder / "keep.pt").write_bytes(b"k")
    (folder / "ckpt-2.pt").write_bytes(b"two")
    (folder / "sub" / "state.bin").write_bytes(b"STATE")
    assert workspace.set_aside(folder, ["ckpt-2.pt", "sub/state.bin"], aside) == ["ckpt-2.pt", "sub/state.bin"]
    assert (aside / "ckpt-2.pt").read_bytes() == b"two" and (aside / "sub" / "state.bin").read_bytes() == b"STATE"
    assert sorted(workspace.scan_folder(folder)) == ["keep.pt"]


def test_set_aside_across_file_systems(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) here")
    folder = shm / f"runctl-test-{uuid.uuid4().hex}"
    folder.mkdir()
    try:
        (folder / "ckpt-2.pt").write_bytes(b"two")
        assert workspace.set_aside(folder, ["ckpt-2.pt"], tmp_path / "aside") == ["ckpt-2.pt"]
        assert (tmp_path / "aside" / "ckpt-2.pt").read_bytes() == b"two" and not (folder / "ckpt-2.pt").exists()
    finally:
        shutil.rmtree(folder)


def test_clear_job_files_deletes_only_what_the_job_wrote(tmp_path):
    folder = tmp_path / "ckpt"
    (folder / "empty-before").mkdir(parents=True)
    workspace.claim_folder(folder, "job-1", None)
    (folder / "d" / "sub").mkdir(parents=True)
    (folder / "d" / "sub" / "x").write_text("x")
    (folder / "y").write_text("y")
    (tmp_path / "outside").write_text("keep")
    os.symlink(tmp_path / "outside", folder / "link")
    workspace.clear_job_files(folder, "job-1")
    assert sorted(p.name for p in folder.iterdir()) == [workspace.JOB_MARK, "empty-before"]
    assert (tmp_path / "outside").read_text() == "keep"  # a symlink is removed, not followed


def test_clear_job_files_refuses_a_folder_that_is_no_longer_the_jobs(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "y").write_text("y")
    with pytest.raises(RunctlError, match="not emptying .* names no job"):
        workspace.clear_job_files(folder, "job-1")
    assert (folder / "y").read_text() == "y"


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
