"""Two resident agents given the same job: only one runs it. The other waits for the job's
lease (as a replacement instance's agent does), finds the job completed when it gets it, and
runs nothing. A job cancelled in the store is not started by an agent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runctl.agent.assignment import assign_job, read_assignment, remote_spec, submit_job
from runctl.agent.cancellation import mark_cancelled
from runctl.agent.status import read_status
from runctl.codesync import upload_tree

REPO = Path(__file__).resolve().parents[2]


def wait_for(what, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def agents(tmp_path, cli_env):
    procs = []

    def start(store_url: str, instance_id: str):
        home = tmp_path / instance_id
        env = {**cli_env, "RUNCTL_HOME": str(home)}
        env = {k: v for k, v in env.items() if not k.startswith("AWS_EC2_METADATA")}
        log = open(tmp_path / f"{instance_id}.log", "ab")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "runctl.agent.resident", "--store", store_url, "--instance-id", instance_id,
             "--no-spot-notices", "--heartbeat-interval", "0.5", "--poll-interval", "0.2"],
            cwd=tmp_path, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL))

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_two_agents_given_the_same_job_run_it_once(local_store, agents, tmp_path, straight_weights):
    project = tmp_path / "project"
    (project / "training").mkdir(parents=True)
    shutil.copy(REPO / "training" / "train.py", project / "training" / "train.py")
    tree = upload_tree(local_store, project)
    spec = remote_spec("shared", ("python", "training/train.py", "--steps", "1500", "--checkpoint-every", "500"),
                       local_store.url, code_tree=tree.tree_id, sync_interval=0.5, grace_period=10)
    submit_job(local_store, "i-aaaaaaaa", spec)
    assign_job(local_store, "i-bbbbbbbb", "shared")
    agents(local_store.url, "i-aaaaaaaa")
    agents(local_store.url, "i-bbbbbbbb")

    done = {i: wait_for(f"{i} to finish its assignment",
                        lambda i=i: (found := read_assignment(local_store, i)) and found[0].state in ("done", "failed")
                        and found[0]) for i in ("i-aaaaaaaa", "i-bbbbbbbb")}
    status = read_status(local_store, "shared")
    assert status.state == "completed"
    assert len(status.attempts) == 1, status.attempts  # run once, by one agent
    assert {a.job_state for a in done.values()} == {"completed"}
    ran = status.attempts[0].instance_id
    assert ran in done
    (other,) = set(done) - {ran}
    assert "completed while this agent waited" in (tmp_path / f"{other}.log").read_text()


def test_an_agent_does_not_start_a_cancelled_job(local_store, agents):
    spec = remote_spec("gone", ("python", "-c", "print('ran')"), local_store.url, code_tree=None)
    submit_job(local_store, "i-cccccccc", spec)
    mark_cancelled(local_store, "gone")
    agents(local_store.url, "i-cccccccc")
    found = wait_for("the assignment", lambda: (a := read_assignment(local_store, "i-cccccccc")) and
                     a[0].state == "done" and a[0])
    assert found.job_state == "stopped" and read_status(local_store, "gone") is None
    assert os.environ.get("RUNCTL_HOME") is None
