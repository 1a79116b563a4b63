"""``runctl run``, driven as a user would: ``python -m runctl run ...`` in a fresh folder.

- acceptance: a rehearsal with three interruptions ends with the weights of a straight run;
  status.json tells the story; status, jobs and logs read it back (also on an S3 store);
- the environment and resume arguments a script gets; exit codes; Ctrl-C; --detach;
- everything after ``--`` reaches the script byte for byte (property test);
- options may follow the script; a stray argument is a usage error that says to use ``--``;
- bad input is one clear line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runctl.agent.status import read_status
from runctl.store.local import LocalStore
from runctl.store.snapshots import Snapshots
from cli_output import json_line, one_line_error
from job_scripts import WIPES_ITS_FOLDER_AND_FAILS

STEPS = 4000  # ~1.5 ms a step: 6 s straight through (the chaos test runs as many)


def store_of(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / ".runctl" / "store")


def weights_line(stdout: str) -> dict:
    return json_line(stdout, "final_step")


# -- acceptance --------------------------------------------------------------------------------

def test_rehearsal_resumes_to_the_weights_of_a_straight_run(runctl_cli, train_here, tmp_path, straight_weights):
    done = runctl_cli("run", train_here, "--rehearse", "3", "--rehearse-at", "1s,1s,1s",
                      "--", "--steps", STEPS, "--checkpoint-every", 250)
    assert done.returncode == 0, done.stderr
    result = weights_line(done.stdout)
    assert result["final_step"] == STEPS
    assert result["weights_sha256"] == straight_weights(STEPS)
    assert "verdict: PASS" in done.stdout and "3 of 3 interruptions" in done.stdout
    assert "Traceback" not in done.stderr

    # status.json in the store: four attempts, each resumed from the one before's last snapshot.
    jobs = runctl_cli("jobs", "--output", "json")
    assert jobs.returncode == 0, jobs.stderr
    listed = json.loads(jobs.stdout)
    assert [j["state"] for j in listed] == ["completed"]
    job_id = listed[0]["job_id"]
    status = read_status(store_of(tmp_path), job_id)
    assert status.state == "completed"
    attempts = status.attempts
    assert [a.reason for a in attempts] == ["interrupted", "interrupted", "interrupted", "completed"]
    assert attempts[0].resumed_from is None
    for before, after in zip(attempts, attempts[1:]):
        assert after.resumed_from is not None
        assert after.resumed_from == before.final_snapshot
        assert after.first_step == before.last_step + 1  # saved on SIGTERM: no step lost
    assert all(a.interruption["source"] == "rehearsal" for a in attempts[:3])
    assert attempts[3].interruption is None and attempts[3].exit_code == 0 and attempts[3].last_step == STEPS
    # The final snapshot records the last step the script reported.
    latest = Snapshots(store_of(tmp_path), f"jobs/{job_id}/checkpoints/").latest()
    assert latest.seq == attempts[3].final_snapshot and latest.metadata["step"] == STEPS

    shown = runctl_cli("status", job_id, "--output", "json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["job_id"] == job_id and data["state"] == "completed"
    assert [a["reason"] for a in data["attempts"]] == [a.reason for a in attempts]
    assert [a["resumed_from"] for a in data["attempts"]] == [a.resumed_from for a in attempts]
    text = runctl_cli("status", job_id)
    assert text.returncode == 0 and f"job {job_id}: completed" in text.stdout and "recoveries: 3" in text.stdout

    logs = runctl_cli("logs", job_id)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.count("resuming at step") == 3 and "fresh start" in logs.stdout
    assert weights_line(logs.stdout) == result
    as_json = json.loads(runctl_cli("logs", job_id, "--output", "json").stdout)
    assert sorted(as_json["attempts"]) == ["0", "1", "2", "3"]
    assert "SIGTERM: saved step" in as_json["attempts"]["0"]

    again = runctl_cli("run", train_here, "--job-id", job_id, "--", "--steps", STEPS, "--checkpoint-every", 250)
    assert again.returncode == 2 and "already completed" in again.stderr


def test_a_rehearsal_on_an_s3_store(moto_server, s3_bucket, runctl_cli, train_here):
    from runctl.store.s3 import S3Store

    url = f"s3://{s3_bucket}/runs"
    done = runctl_cli("run", train_here, "--store", url, "--job-id", "on-s3", "--rehearse", "1", "--rehearse-at", "1s",
                      "--", "--steps", 1500, "--checkpoint-every", 500)
    assert done.returncode == 0, done.stderr
    assert weights_line(done.stdout)["final_step"] == 1500
    first, second = read_status(S3Store(s3_bucket, "runs"), "on-s3").attempts
    assert (first.reason, second.reason) == ("interrupted", "completed")
    assert second.resumed_from == first.final_snapshot is not None
    for command in (["status", "on-s3"], ["jobs"], ["logs", "on-s3"]):
        shown = runctl_cli(*command, "--store", url, "--output", "json")
        assert shown.returncode == 0, (command, shown.stderr)
        assert "on-s3" in shown.stdout


def test_status_logs_and_jobs_find_an_aws_job_without_store(moto_server, s3_bucket, runctl_cli, train_here,
                                                              tmp_path):
    """A job in s3://<[aws] s3_bucket>/runctl (where `aws train|run` put jobs) is found
    without --store, after the default store."""
    (tmp_path / ".runctl.toml").write_text(f'[aws]\ns3_bucket = "{s3_bucket}"\n')
    done = runctl_cli("run", train_here, "--store", f"s3://{s3_bucket}/runctl", "--job-id", "on-aws",
                      "--", "--steps", 300, "--checkpoint-every", 100)
    assert done.returncode == 0, done.stderr
    done = runctl_cli("run", train_here, "--job-id", "here", "--", "--steps", 300, "--checkpoint-every", 100)
    assert done.returncode == 0, done.stderr

    shown = runctl_cli("status", "on-aws", "--output", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["job_id"] == "on-aws" and json.loads(shown.stdout)["state"] == "completed"
    logs = runctl_cli("logs", "on-aws")
    assert logs.returncode == 0 and weights_line(logs.stdout)["final_step"] == 300
    listed = runctl_cli("jobs")
    assert listed.returncode == 0, listed.stderr
    row = {job: next(line for line in listed.stdout.splitlines() if f" {job} " in line) for job in ("on-aws", "here")}
    assert f"s3://{s3_bucket}/runctl" in row["on-aws"] and "s3://" not in row["here"]

    missing = runctl_cli("status", "nope")
    assert missing.returncode == 2
    assert f"no job 'nope' in file://{tmp_path}/.runctl/store or s3://{s3_bucket}/runctl" in missing.stderr
    elsewhere = runctl_cli("status", "on-aws", "--store", str(tmp_path / ".runctl" / "store"))
    assert elsewhere.returncode == 2  # an explicit --store is the only place looked in


# -- the checkpoint folder: runctl never moves, changes or deletes a file it did not write ---------

def fingerprints(folder: Path) -> dict:
    """Every entry below ``folder`` (not following symlinks) with its inode, mtime and content."""
    found = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        found[str(path.relative_to(folder))] = (st.st_ino, st.st_mtime_ns, data)
    return found


def top_level(folder: Path) -> dict:
    return {p.name: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in folder.iterdir()}


def test_a_system_folder_is_refused_and_left_alone(runctl_cli, tmp_path):
    (tmp_path / "saves.py").write_text(SAVES_ONE_FILE_AND_FAILS)
    before = top_level(Path("/etc"))
    line = one_line_error(runctl_cli("run", "saves.py", "--checkpoint-dir", "/etc"))
    assert line.startswith("runctl: error: checkpoint folder /etc is a system folder;") and "--checkpoint-dir" in line
    (tmp_path / ".runctl.toml").write_text('[checkpoint]\ndir = "/etc"\n')
    line = one_line_error(runctl_cli("run", "saves.py"))
    assert "checkpoint folder /etc is a system folder" in line and "[checkpoint] dir" in line
    assert top_level(Path("/etc")) == before
    assert not (tmp_path / "resumed-0.json").exists()  # the script never ran


def test_the_project_folder_is_refused_and_left_alone(runctl_cli, tmp_path):
    (tmp_path / "saves.py").write_text(SAVES_ONE_FILE_AND_FAILS)
    (tmp_path / "data.csv").write_text("1,2\n")
    before = fingerprints(tmp_path)
    for folder in (".", tmp_path.parent):
        line = one_line_error(runctl_cli("run", "saves.py", "--checkpoint-dir", folder))
        assert "job's working folder" in line and "--checkpoint-dir" in line
    assert fingerprints(tmp_path) == before


def test_the_home_folder_is_refused_and_left_alone(runctl_cli, tmp_path, cli_env):
    (tmp_path / "saves.py").write_text(SAVES_ONE_FILE_AND_FAILS)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("secret")
    before = fingerprints(home)
    for given in ("~", str(home)):
        line = one_line_error(runctl_cli("run", "saves.py", "--checkpoint-dir", given,
                                         env={**cli_env, "HOME": str(home)}))
        assert f"checkpoint folder {home} is the home folder" in line
    assert fingerprints(home) == before


def test_a_folder_holding_the_store_is_refused(runctl_cli, tmp_path):
    (tmp_path / "saves.py").write_text(SAVES_ONE_FILE_AND_FAILS)
    done = runctl_cli("run", "saves.py", "--job-id", "j1", "--store", "keep/store", "--checkpoint-dir", "keep/ckpt")
    assert done.returncode == 1, done.stderr  # the script exits 3: a failed job, its snapshot in the store
    before = fingerprints(tmp_path / "keep")
    line = one_line_error(runctl_cli("run", "saves.py", "--job-id", "j2", "--store", "keep/store",
                                     "--checkpoint-dir", "keep"))
    assert f"checkpoint folder {tmp_path / 'keep'} holds the checkpoint store {tmp_path / 'keep' / 'store'}" in line
    line = one_line_error(runctl_cli("run", "saves.py", "--job-id", "j2", "--store", "keep/store",
                                     "--checkpoint-dir", "keep/store/jobs"))
    assert "is inside the checkpoint store" in line
    assert fingerprints(tmp_path / "keep") == before


def test_a_folder_with_a_foreign_file_is_refused_naming_it(runctl_cli, tmp_path):
    (tmp_path / "saves.py").write_text(SAVES_ONE_FILE_AND_FAILS)
    (tmp_path / "mine" / "notes").mkdir(parents=True)
    (tmp_path / "mine" / "notes" / "todo.txt").write_text("not runctl's")
    before = fingerprints(tmp_path / "mine")
    line = one_line_error(runctl_cli("run", "saves.py", "--checkpoint-dir", "mine"))
    assert "holds 1 file(s) runctl did not write" in line and "notes/todo.txt" in line
    assert "empty the folder or give the job another with --checkpoint-dir" in line
    assert fingerprints(tmp_path / "mine") == before
    assert not (tmp_path / "resumed-0.json").exists()


def test_a_foreign_file_met_by_a_restart_fails_the_job_saying_what_to_fix(runctl_cli, tmp_path):
    """The agent, not the command line, meets it: status.json's message says what is wrong and
    that it needs fixing first, not to run the same command again (which stops the same way)."""
    (tmp_path / "wipes.py").write_text(WIPES_ITS_FOLDER_AND_FAILS)
    done = runctl_cli("run", "wipes.py", "--job-id", "wipes", "--checkpoint-dir", "ck",
                      "--max-restarts-on-errors", 1)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("runctl: error:")]
    assert "holds 1 file(s) runctl did not write for job wipes: latest" in error
    status = read_status(store_of(tmp_path), "wipes")
    assert status.state == "failed" and [a.reason for a in status.attempts] == ["failed"]
    assert status.message.startswith(f"the agent stopped: checkpoint folder {tmp_path / 'ck'} holds 1 file(s) "
                                     "runctl did not write for job wipes: latest;")
    assert "fix that first" in status.message and "run the same command again" not in status.message
    shown = runctl_cli("status", "wipes")
    assert shown.returncode == 0 and "fix that first" in shown.stdout, shown.stderr
    assert (tmp_path / "ck" / "latest").is_symlink()  # left as it was


def test_a_shared_checkpoint_folder_is_refused_to_a_second_job(runctl_cli, train_here, tmp_path):
    """Contract changed: a fresh start used to move another job's files out of a shared folder."""
    shared = tmp_path / "shared-checkpoints"
    done = runctl_cli("run", train_here, "--job-id", "ja", "--checkpoint-dir", shared,
                      "--", "--steps", 100, "--checkpoint-every", 25)
    assert done.returncode == 0, done.stderr
    before = fingerprints(shared)
    line = one_line_error(runctl_cli("run", train_here, "--job-id", "jc", "--checkpoint-dir", shared,
                                     "--", "--steps", 50, "--checkpoint-every", 25))
    assert f"checkpoint folder {shared} belongs to job ja (it holds ckpt-000050.json, ckpt-000075.json, " in line
    assert fingerprints(shared) == before
    assert Snapshots(store_of(tmp_path), "jobs/jc/checkpoints/").latest() is None


def test_a_relative_checkpoint_folder_and_the_jobs_own_leftovers(runctl_cli, tmp_path):
    (tmp_path / "saves.py").write_text(SAVES_ONE_FILE_AND_FAILS)
    done = runctl_cli("run", "saves.py", "--job-id", "rel", "--checkpoint-dir", "checkpoints")
    assert done.returncode == 1, done.stderr
    folder = tmp_path / "checkpoints"
    assert sorted(f.path for f in Snapshots(store_of(tmp_path), "jobs/rel/checkpoints/").latest().files) == ["ckpt-0.pt"]
    # As if the agent had died before its final upload: a file of the job the store never got.
    (folder / "ckpt-late.pt").write_bytes(b"late")
    done = runctl_cli("run", "saves.py", "--job-id", "rel", "--checkpoint-dir", "checkpoints")
    assert done.returncode == 1, done.stderr
    assert json.loads((tmp_path / "resumed-1.json").read_text())["env"] == str(folder / "ckpt-0.pt")
    assert "moved 1 of the job's local file(s) not in the store's latest snapshot to" in done.stderr
    aside = list((tmp_path / ".runctl" / "jobs" / "rel" / "displaced").rglob("ckpt-late.pt"))
    assert [p.read_bytes() for p in aside] == [b"late"]


@pytest.fixture
def other_file_system(tmp_path):
    """A fresh folder on a file system other than tmp_path's (/dev/shm), removed afterwards."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) here")
    folder = shm / f"runctl-test-{uuid.uuid4().hex}"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_checkpoint_folder_on_another_file_system(runctl_cli, tmp_path, other_file_system):
    (tmp_path / "saves.py").write_text(SAVES_ONE_FILE_AND_FAILS)
    folder = other_file_system
    done = runctl_cli("run", "saves.py", "--job-id", "shm", "--checkpoint-dir", folder)
    assert done.returncode == 1, done.stderr
    (folder / "ckpt-late.pt").write_bytes(b"late")  # the job's, never uploaded: set aside across devices
    done = runctl_cli("run", "saves.py", "--job-id", "shm", "--checkpoint-dir", folder)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert json.loads((tmp_path / "resumed-1.json").read_text())["env"] == str(folder / "ckpt-0.pt")
    aside = list((tmp_path / ".runctl" / "jobs" / "shm" / "displaced").rglob("ckpt-late.pt"))
    assert [p.read_bytes() for p in aside] == [b"late"] and not (folder / "ckpt-late.pt").exists()


SAVES_ONE_FILE_AND_FAILS = """\
import json, os, sys
from pathlib import Path
import runctl
runs = sorted(Path(".").glob("resumed-*.json"))
Path(f"resumed-{len(runs)}.json").write_text(json.dumps({"env": os.environ.get("RUNCTL_RESUME_FROM"),
                                                        "argv": sys.argv[1:]}))
runctl.save_atomic(runctl.checkpoint_dir() / f"ckpt-{len(runs)}.pt", str(len(runs)).encode())
sys.exit(3)
"""


@pytest.mark.parametrize("newest", ["/etc/passwd", "../x", 42])
def test_a_manifest_naming_a_newest_outside_the_snapshot_is_not_resumed_from(runctl_cli, tmp_path, newest):
    (tmp_path / "saves.py").write_text(SAVES_ONE_FILE_AND_FAILS)
    for _ in range(2):  # snapshot 1 holds ckpt-0.pt; snapshot 2 adds ckpt-1.pt
        done = runctl_cli("run", "saves.py", "--job-id", "tampered", "--resume-args", "--resume {checkpoint}")
        assert done.returncode == 1, done.stderr
    store = store_of(tmp_path)
    key = "jobs/tampered/checkpoints/00000002/MANIFEST.json"
    manifest = json.loads(store.read(key).data)
    assert manifest["metadata"]["newest"] == "ckpt-1.pt"
    manifest["metadata"]["newest"] = newest
    store.write(key, json.dumps(manifest).encode())

    done = runctl_cli("run", "saves.py", "--job-id", "tampered", "--resume-args", "--resume {checkpoint}")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    third = json.loads((tmp_path / "resumed-2.json").read_text())
    folder = tmp_path / ".runctl" / "jobs" / "tampered" / "checkpoints"
    # Snapshot 2 is passed over as invalid: the job resumes from snapshot 1.
    assert third == {"env": str(folder / "ckpt-0.pt"), "argv": ["--resume", str(folder / "ckpt-0.pt")]}
    assert "attempt 2 started from snapshot 1 (ckpt-0.pt)" in done.stderr


# -- the script's side ------------------------------------------------------------------------

RECORDS_ITS_ENVIRONMENT = """\
import json, os, signal, sys, time
from pathlib import Path
import runctl
NAMES = ("RUNCTL_CHECKPOINT_DIR", "TRAINCTL_CHECKPOINT_DIR", "RUNCTL_RESUME_FROM", "RUNCTL_JOB_ID",
         "RUNCTL_ATTEMPT", "RUNCTL_INTERRUPT_FILE")
record = {name: os.environ.get(name) for name in NAMES}
record["argv"] = sys.argv[1:]
record["resume_from"] = str(runctl.resume_from()) if runctl.resume_from() else None
folder = runctl.checkpoint_dir()
if os.environ["RUNCTL_ATTEMPT"] == "0":
    runctl.save_atomic(folder / "state-1.json", b"one")
    signal.signal(signal.SIGTERM, lambda *_: None)  # as Lightning does: note it, save, exit 0
    while not runctl.interrupted():
        time.sleep(0.02)
    record["notice"] = json.loads(Path(os.environ["RUNCTL_INTERRUPT_FILE"]).read_text())
    runctl.save_atomic(folder / "state-2.json", b"two")
else:
    record["resumed_content"] = Path(os.environ["RUNCTL_RESUME_FROM"]).read_text()
Path("env-" + os.environ["RUNCTL_ATTEMPT"] + ".json").write_text(json.dumps(record))
"""


def test_the_environment_and_resume_args_a_script_gets(runctl_cli, tmp_path, cli_env):
    (tmp_path / "envcheck.py").write_text(RECORDS_ITS_ENVIRONMENT)
    # As if run inside another runctl attempt: the stale values must not leak through.
    env = {**cli_env, "RUNCTL_RESUME_FROM": "/stale/ckpt", "TRAINCTL_CHECKPOINT_DIR": "/stale"}
    done = runctl_cli("run", "envcheck.py", "--job-id", "envjob", "--rehearse", "1", "--rehearse-at", "1.5s",
                      "--resume-args", "--resume {checkpoint}", "--", "--flag", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    first = json.loads((tmp_path / "env-0.json").read_text())
    second = json.loads((tmp_path / "env-1.json").read_text())
    folder = tmp_path / ".runctl" / "jobs" / "envjob" / "checkpoints"
    for record, attempt in ((first, "0"), (second, "1")):
        assert record["RUNCTL_CHECKPOINT_DIR"] == record["TRAINCTL_CHECKPOINT_DIR"] == str(folder)
        assert record["RUNCTL_JOB_ID"] == "envjob" and record["RUNCTL_ATTEMPT"] == attempt
    assert first["RUNCTL_RESUME_FROM"] is None and first["resume_from"] is None and first["argv"] == ["--flag"]
    assert first["notice"]["source"] == "rehearsal"
    assert first["RUNCTL_INTERRUPT_FILE"] != second["RUNCTL_INTERRUPT_FILE"]
    # Resumed from the newest checkpoint, which was saved after the notice.
    assert second["RUNCTL_RESUME_FROM"] == second["resume_from"] == str(folder / "state-2.json")
    assert second["argv"] == ["--flag", "--resume", str(folder / "state-2.json")]
    assert second["resumed_content"] == "two"

    attempts = read_status(store_of(tmp_path), "envjob").attempts
    # Exit code 0 after a notice still counts as interrupted.
    assert [(a.reason, a.exit_code) for a in attempts] == [("interrupted", 0), ("completed", 0)]
    assert attempts[1].resumed_from == attempts[0].final_snapshot is not None


# -- outcomes and exit codes ---------------------------------------------------------------------

def test_a_failing_script_fails_the_job_with_exit_1(runctl_cli, tmp_path):
    (tmp_path / "bad.py").write_text("import sys; sys.exit(3)\n")
    done = runctl_cli("run", "bad.py", "--job-id", "bad")
    assert done.returncode == 1
    assert [(a.reason, a.exit_code) for a in read_status(store_of(tmp_path), "bad").attempts] == [("failed", 3)]
    retried = runctl_cli("run", "bad.py", "--job-id", "bad2", "--max-restarts-on-errors", "1")
    assert retried.returncode == 1
    status = read_status(store_of(tmp_path), "bad2")
    assert status.state == "failed" and [a.reason for a in status.attempts] == ["failed", "failed"]


def test_ctrl_c_twice_kills_at_once(tmp_path, cli_env):
    (tmp_path / "stubborn.py").write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open('ready', 'w').close()\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "runctl", "run", "stubborn.py", "--job-id", "ctrl-c"],
                            cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # asks the script to stop: SIGTERM, 90 s of grace
        time.sleep(0.5)
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)  # the second Ctrl-C: kill now
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 10
    attempt = read_status(store_of(tmp_path), "ctrl-c").attempts[-1]
    assert attempt.reason == "stopped" and attempt.exit_code == -signal.SIGKILL


def test_a_completed_derived_job_id_is_not_reused(runctl_cli, tmp_path):
    (tmp_path / "ok.py").write_text("print('ran')\n")
    assert runctl_cli("run", "ok.py").returncode == 0
    assert runctl_cli("run", "ok.py").returncode == 0
    ids = sorted(job["job_id"] for job in json.loads(runctl_cli("jobs", "--output", "json").stdout))
    assert len(ids) == 2 and ids[1] == ids[0] + "-2" and ids[0].startswith("ok-")


# -- --detach -------------------------------------------------------------------------------------

def test_detach_then_follow_the_logs(runctl_cli, train_here, tmp_path):
    started = runctl_cli("run", train_here, "--detach", "--job-id", "bg", "--output", "json",
                         "--", "--steps", 300, "--checkpoint-every", 100)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["job_id"] == "bg"
    followed = runctl_cli("logs", "bg", "-f", timeout=60)  # at once, as the message suggests
    assert followed.returncode == 0, followed.stderr
    assert weights_line(followed.stdout)["final_step"] == 300
    assert read_status(store_of(tmp_path), "bg").state == "completed"


def test_detach_reports_an_agent_that_could_not_start(runctl_cli, train_here, tmp_path):
    # A live agent (this test process) holds the job's lease: the detached agent must give up.
    store_of(tmp_path).write("jobs/held/lease.json", json.dumps(
        {"holder": "test", "host": socket.gethostname(), "pid": os.getpid(), "expires": time.time() + 600,
         "released": False}).encode())
    done = runctl_cli("run", train_here, "--detach", "--job-id", "held", "--", "--steps", 10, timeout=60)
    assert done.returncode == 1
    assert "the agent stopped at once" in done.stderr and "already running" in done.stderr
    assert "Traceback" not in done.stderr


# -- arguments -----------------------------------------------------------------------------------

ECHO_ARGV = """\
import json, os, sys
with open("argv.json", "w") as f:
    json.dump([os.fsencode(a).hex() for a in sys.argv[1:]], f)
"""

NASTY = ["", "--", " ", "a b", "$(touch pwned)", "`id`", "'", '"', "\n", "line\nbreak", "\t", "\\", "*", "~",
         "--help", "-h", "--job-id", "--output=json", "{checkpoint}", "ü", "日本語", "🚀", "\u200b", "\x7f", "-", ";",
         "a=b", "%s", "${HOME}"]

arguments = st.lists(
    st.one_of(
        st.sampled_from(NASTY),
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
    ),
    max_size=8,
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(args=arguments)
def test_arguments_after_double_dash_reach_the_script_byte_exact(args, runctl_cli, tmp_path):
    script = tmp_path / "echo_argv.py"
    script.write_text(ECHO_ARGV)
    report = tmp_path / "argv.json"
    report.unlink(missing_ok=True)
    done = runctl_cli("run", "echo_argv.py", "--job-id", f"argv-{uuid.uuid4().hex[:10]}", "--", *args, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text()) == [a.encode("utf-8").hex() for a in args]
    assert not (tmp_path / "pwned").exists()


def test_options_may_follow_the_script(runctl_cli, tmp_path):
    (tmp_path / "echo_argv.py").write_text(ECHO_ARGV)
    done = runctl_cli("run", "echo_argv.py", "--job-id", "x", "--", "a")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "argv.json").read_text()) == [b"a".hex()]
    assert read_status(store_of(tmp_path), "x").state == "completed"

    # Before and after, --output json among them; runctl's own option names after -- are the script's.
    done = runctl_cli("run", "--grace", "5", "echo_argv.py", "--job-id", "y", "--output", "json",
                      "--", "--job-id", "z", "--output", "text")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["job_id"] == "y"  # stdout is the JSON document alone
    assert json.loads((tmp_path / "argv.json").read_text()) == [a.encode().hex() for a in
                                                                ("--job-id", "z", "--output", "text")]
    assert read_status(store_of(tmp_path), "z") is None


def test_a_stray_argument_after_the_script_says_to_use_double_dash(runctl_cli, tmp_path):
    (tmp_path / "echo_argv.py").write_text(ECHO_ARGV)
    done = runctl_cli("run", "echo_argv.py", "--job-id", "s", "stray", "--", "a")
    assert done.returncode == 2
    assert "unexpected argument 'stray'" in done.stderr and "after '--'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "argv.json").exists()

    unknown = runctl_cli("run", "echo_argv.py", "--steps", "5")
    assert unknown.returncode == 2
    assert "--steps" in unknown.stderr and "after it" in unknown.stderr


# -- bad input: one line, exit 2 -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nope.py"], "script not found: nope.py"),
        (["./noexec"], "./noexec is not executable"),
        (["noexec"], "noexec is not executable"),
        (["ok.py", "--checkpoint-dir", "afile/ckpt"], "is not writable"),
        (["ok.py", "--store", "gs://b/x"], "unknown store URL scheme 'gs://'"),
        (["ok.py", "--rehearse-at", "soon"], "invalid duration 'soon'"),
        (["ok.py", "--rehearse", "2", "--rehearse-at", "1s"], "one time per interruption"),
        (["ok.py", "--stop-signal", "SIGFOO"], "unknown signal 'SIGFOO'"),
        (["ok.py", "--job-id", "no spaces please"], "invalid --job-id"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, runctl_cli, tmp_path):
    (tmp_path / "ok.py").write_text("print('ran')\n")
    (tmp_path / "noexec").write_text("#!/bin/sh\necho ran\n")
    (tmp_path / "noexec").chmod(0o644)
    (tmp_path / "afile").write_text("a file, not a folder")
    line = one_line_error(runctl_cli("run", *args))
    assert line.startswith("runctl: error: ") and expected in line
    assert not list((tmp_path / ".runctl").glob("store/jobs/*/status.json"))  # nothing ran


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0500; the afile/ckpt case covers it")
def test_a_read_only_checkpoint_folder(runctl_cli, tmp_path):
    (tmp_path / "ok.py").write_text("print('ran')\n")
    (tmp_path / "ro").mkdir(mode=0o500)
    line = one_line_error(runctl_cli("run", "ok.py", "--checkpoint-dir", "ro/ckpt"))
    assert "not writable" in line
