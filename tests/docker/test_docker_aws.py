"""runctl aws train with a Dockerfile: built and pushed to a real registry (logged in as ECR
is, with moto's GetAuthorizationToken), and run by the fake-cloud instance's agent in a
container of the image it pulled itself. No code is synced: the script comes from the image."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runctl.testing.cloud import FakeCloud
from waiting import wait_for

# One Docker engine per test session: with pytest-xdist, every test that uses it runs in one worker.
pytestmark = pytest.mark.xdist_group("docker-engine")

STEPS = 600


@pytest.fixture
def cloud(tmp_path, docker_host, monkeypatch, fake_cloud_options):
    # The agents' own docker login (not the CLI's): their DOCKER_CONFIG comes from this environment.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "agent-docker-config"))
    # A two-minute notice compressed to 6 s: time enough for the final snapshot on a busy machine.
    # A harness of the test's own over the session's moto server (reset at its start).
    with FakeCloud(tmp_path / "cloud", notice_deadline_s=6.0, **fake_cloud_options) as fake:
        yield fake
        assert fake.leftovers() == []


@pytest.fixture
def aws_runctl(cloud, docker_project, docker_host, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_", "AWS_", "DOCKER_"))}
    env.update(cloud.env, XDG_CONFIG_HOME=str(tmp_path / "xdg"), RUNCTL_AWS_AMI=cloud.image_id,
               DOCKER_HOST=docker_host, DOCKER_CONFIG=str(tmp_path / "cli-docker-config"))

    started: list[subprocess.Popen] = []

    def run(*args: str, timeout: float = 120, background: bool = False, **extra: str):
        argv = [sys.executable, "-m", "runctl", *args]
        if background:
            proc = subprocess.Popen(argv, cwd=docker_project, env={**env, **extra}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            started.append(proc)
            return proc
        return subprocess.run(argv, cwd=docker_project, env={**env, **extra}, capture_output=True, text=True,
                              timeout=timeout)

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_aws_train_runs_the_job_in_the_pushed_image(cloud, aws_runctl, registry, straight_weights):
    created = aws_runctl("aws", "create", "--spot", "--instance-type", "t3.micro", "--wait",
                         "--output", "instance-id")
    assert created.returncode == 0, created.stderr
    instance_id = created.stdout.strip()

    trained = aws_runctl("aws", "train", instance_id, "training/train.py", "--wait",
                         "--", "--steps", str(STEPS), "--checkpoint-every", "200")
    agent_log = cloud.instances[instance_id].log_path.read_text()
    assert trained.returncode == 0, trained.stderr + agent_log
    assert "runctl: using Docker (Dockerfile found at training/Dockerfile" in trained.stderr, trained.stderr
    assert "runctl: pushed " in trained.stderr
    assert "code: uploaded" not in trained.stderr  # no code sync: the script can only come from the image
    result = json.loads([line for line in trained.stdout.splitlines() if line.startswith("{")][-1])
    assert result == {"final_step": STEPS, "weights_sha256": straight_weights(STEPS)}
    # The agent logged in with its own (ECR) credentials and pulled the image itself.
    assert f"logged in to {registry} as AWS, pulled {registry}/proj-" in agent_log, agent_log
    assert "123456789012-auth-token" not in agent_log + trained.stderr + trained.stdout

    terminated = aws_runctl("aws", "terminate", instance_id)
    assert terminated.returncode == 0, terminated.stderr


def test_spot_interruption_resumes_in_a_new_container_to_the_same_weights(
        cloud, aws_runctl, docker_project, docker_host, registry, straight_weights):
    from runctl.agent.status import read_status
    from runctl.store import layout, open_store
    from runctl.store.snapshots import Snapshots

    steps = 6000
    proc = aws_runctl("aws", "run", "training/train.py", "--spot", "-t", "t3.micro", "--auto-resume",
                      "--", "--steps", str(steps), "--checkpoint-every", "500", background=True,
                      RUNCTL_CHECKPOINT_SYNC_INTERVAL="0.5")
    store = open_store(f"s3://{cloud.bucket}/runctl", session=cloud.session(), endpoint_url=cloud.endpoint)

    def progressing():
        jobs = store.list_dirs("jobs/")
        status = read_status(store, jobs[0]) if jobs else None
        if status is None or len(status.attempts) != 1 or status.state != "running":
            return None
        latest = Snapshots(store, layout.checkpoints_prefix(jobs[0])).latest()
        return status.attempts[0].instance_id if latest is not None else None

    first = wait_for("the first attempt to make progress", progressing, proc, timeout=90)
    cloud.interrupt(first)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "runctl: using Docker (Dockerfile found at training/Dockerfile" in err
    result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert result == {"final_step": steps, "weights_sha256": straight_weights(steps)}
    (job_id,) = store.list_dirs("jobs/")
    status = read_status(store, job_id)
    assert [a.reason for a in status.attempts] == ["interrupted", "completed"]
    assert status.attempts[1].resumed_from is not None and status.attempts[1].instance_id != first
    second_log = cloud.instances[status.attempts[1].instance_id].log_path.read_text()
    assert f"pulled {registry}/proj-" in second_log  # the replacement pulled the image and ran it anew
    left = subprocess.run(["docker", "ps", "-aq", "--filter", "name=runctl-"], capture_output=True, text=True,
                          env={**os.environ, "DOCKER_HOST": docker_host})
    assert left.stdout.strip() == ""  # the interrupted attempt's container is gone too


def test_no_docker_opts_out_and_syncs_the_code(cloud, aws_runctl, straight_weights):
    created = aws_runctl("aws", "create", "--instance-type", "t3.micro", "--wait", "--output", "instance-id")
    assert created.returncode == 0, created.stderr
    instance_id = created.stdout.strip()
    trained = aws_runctl("aws", "train", instance_id, "training/train.py", "--no-docker", "--wait",
                         "--", "--steps", "200")
    agent_log = cloud.instances[instance_id].log_path.read_text()
    assert trained.returncode == 0, trained.stderr + agent_log
    assert "Docker" not in trained.stderr and "code: uploaded" in trained.stderr
    assert "pulled" not in agent_log
    result = json.loads([line for line in trained.stdout.splitlines() if line.startswith("{")][-1])
    assert result == {"final_step": 200, "weights_sha256": straight_weights(200)}
    assert aws_runctl("aws", "terminate", instance_id).returncode == 0
