"""The resident agent, end to end on this machine: a job assigned through the store (code
tree + job.json + assignment, as `runctl aws train` writes them) runs to the straight run's
weights, with checkpoints and logs in the store; a second job reuses the code cache; a
job that cannot run is marked failed; SIGTERM stops the running job and the agent."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runctl.agent.assignment import read_agent_record, read_assignment, remote_spec, submit_job
from runctl.agent.logs import attempts_with_logs, log_chunks
from runctl.agent.resident import local_spec
from runctl.agent.status import read_status
from runctl.codesync import upload_tree
from runctl.errors import UsageError
from runctl.store import layout
from runctl.store.snapshots import Snapshots
from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
INSTANCE = "i-test"


def job_output(store, job_id) -> str:
    return "".join(store.read(key).data.decode() for n in attempts_with_logs(store, job_id)
                   for key in log_chunks(store, job_id, n))


def final_weights(store, job_id) -> str:
    lines = [line for line in job_output(store, job_id).splitlines() if line.startswith("{")]
    return json.loads(lines[-1])["weights_sha256"]


def final_state(store, job_id):
    status = read_status(store, job_id)
    return status if status is not None and status.state in ("completed", "failed", "stopped") else None


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    (root / "training").mkdir(parents=True)
    shutil.copy(REPO / "training" / "train.py", root / "training" / "train.py")
    (root / "notes.log").write_text("not code\n")
    (root / ".gitignore").write_text("*.log\n")
    return root


@pytest.fixture
def resident(tmp_path, cli_env):
    """Start ``python -m runctl.agent.resident`` on a store; returns (proc, home)."""
    procs = []

    def start(store_url: str):
        home = tmp_path / "home"
        env = {**cli_env, **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}, "RUNCTL_HOME": str(home)}
        env.pop("AWS_EC2_METADATA_SERVICE_ENDPOINT", None)
        log = open(tmp_path / "resident.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "runctl.agent.resident", "--store", store_url,
                                 "--instance-id", INSTANCE, "--no-spot-notices",
                                 "--heartbeat-interval", "0.5", "--poll-interval", "0.2"],
                                cwd=tmp_path, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        procs.append(proc)
        return proc, home

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if any(p.returncode not in (0, -9) for p in procs):
        print((tmp_path / "resident.log").read_text(errors="replace"))


def submit(store, project, job_id, steps, *, every=50):
    tree = upload_tree(store, project)
    spec = remote_spec(job_id, ("python", "training/train.py", "--steps", str(steps),
                                "--checkpoint-every", str(every)),
                       store.url, code_tree=tree.tree_id, sync_interval=0.5, grace_period=10)
    submit_job(store, INSTANCE, spec)
    return tree


def test_resident_agent_runs_assigned_jobs_end_to_end(s3_store, project, resident, straight_weights, tmp_path):
    store = s3_store
    proc, home = resident(store.url)
    record = wait_for("the first heartbeat", lambda: read_agent_record(store, INSTANCE), proc=proc)
    assert record["state"] == "idle" and record["instance_id"] == INSTANCE and record["job_id"] is None

    tree = submit(store, project, "first", 300)
    status = wait_for("job first to end", lambda: final_state(store, "first"), proc=proc)
    assert status.state == "completed", job_output(store, "first")
    assert final_weights(store, "first") == straight_weights(300)
    latest = Snapshots(store, layout.checkpoints_prefix("first")).latest()
    assert latest is not None and latest.files
    assert all(a.instance_id == INSTANCE for a in status.attempts)
    assignment = wait_for("the assignment to be done", lambda: (found := read_assignment(store, INSTANCE))
                          and found[0].state == "done" and found[0])
    assert assignment.job_state == "completed"
    record = wait_for("an idle heartbeat after the job",
                      lambda: (r := read_agent_record(store, INSTANCE))["state"] == "idle" and r)
    assert time.time() - record["heartbeat"] < 10
    code = home / "code" / "trees" / tree.tree_id
    assert (code / "training" / "train.py").is_file() and not (code / "notes.log").exists()
    inode = (code / "training" / "train.py").stat().st_ino
    assert (home / "jobs" / "first" / "checkpoints").is_dir()

    # A second job on the same agent and code: the cached tree is used as it is.
    again = submit(store, project, "second", 200)
    assert again.tree_id == tree.tree_id and again.uploaded_count == 0
    status = wait_for("job second to end", lambda: final_state(store, "second"), proc=proc)
    assert status.state == "completed"
    assert final_weights(store, "second") == straight_weights(200)
    assert (code / "training" / "train.py").stat().st_ino == inode
    assert sorted(p.name for p in (home / "code" / "trees").iterdir()) == [tree.tree_id]

    # A job that cannot run (no job.json) is marked failed; the agent keeps serving.
    from runctl.agent.assignment import assign_job

    assign_job(store, INSTANCE, "ghost")
    failed = wait_for("the ghost assignment to fail", lambda: (found := read_assignment(store, INSTANCE))
                      and found[0].state == "failed" and found[0], proc=proc)
    assert "no job.json" in failed.message

    # SIGTERM while a job runs: the job is stopped (after a final snapshot), then the agent exits 0.
    submit(store, project, "long", 200000, every=100)
    wait_for("job long to report progress",
             lambda: (s := read_status(store, "long")) and s.attempts and s.attempts[-1].last_step, proc=proc,
             timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert read_status(store, "long").state == "stopped"
    assert read_assignment(store, INSTANCE)[0].job_state == "stopped"
    assert read_agent_record(store, INSTANCE)["state"] == "stopped"


def test_sigterm_while_idle_exits_cleanly(local_store, resident):
    proc, _home = resident(local_store.url)
    wait_for("the first heartbeat", lambda: read_agent_record(local_store, INSTANCE), proc=proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert read_agent_record(local_store, INSTANCE)["state"] == "stopped"


def test_local_spec_rewrites_the_job_for_this_machine(tmp_path):
    spec = remote_spec("j1", ("python", "train.py", "--x"), "s3://b/p", code_tree="t" * 64, max_restarts=2)
    here = local_spec(spec, workdir=tmp_path / "code", home=tmp_path / "home", store_url="s3://b/p",
                      python="/opt/runctl/venv/bin/python")
    assert here.command == ("/opt/runctl/venv/bin/python", "train.py", "--x")
    assert here.workdir == str(tmp_path / "code")
    assert here.checkpoint_dir == str(tmp_path / "home" / "jobs" / "j1" / "checkpoints")
    assert here.max_restarts == 2 and here.code_tree == "t" * 64
    other = local_spec(remote_spec("j2", ("bash", "run.sh"), "s3://b/p", code_tree=None),
                       workdir=tmp_path, home=tmp_path, store_url="s3://b/p")
    assert other.command == ("bash", "run.sh")


def test_a_checkpoint_folder_of_the_job_is_inside_its_code_folder(tmp_path):
    spec = remote_spec("j1", ("python", "train.py"), "s3://b/p", code_tree="t" * 64, checkpoint_dir="out/ckpt")
    here = local_spec(spec, workdir=tmp_path / "code", home=tmp_path / "home", store_url="s3://b/p")
    assert here.checkpoint_dir == str(tmp_path / "code" / "out" / "ckpt")
    for outside in ("../ckpt", "/var/ckpt"):
        with pytest.raises(UsageError, match="on an instance it is a folder of the job's code folder"):
            local_spec(dataclasses.replace(spec, checkpoint_dir=outside), workdir=tmp_path / "code",
                       home=tmp_path / "home", store_url="s3://b/p")
