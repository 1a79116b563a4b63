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

STEPS = 600


@pytest.fixture
def cloud(tmp_path, docker_host, monkeypatch):
    # The agents' own docker login (not the CLI's): their DOCKER_CONFIG comes from this environment.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "agent-docker-config"))
    with FakeCloud(tmp_path / "cloud", notice_deadline_s=3.0) as fake:
        yield fake
        assert fake.leftovers() == []


@pytest.fixture
def aws_runctl(cloud, docker_project, docker_host, tmp_path):
    ami = cloud.client("ec2").describe_images()["Images"][0]["ImageId"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_", "AWS_", "DOCKER_"))}
    env.update(cloud.env, XDG_CONFIG_HOME=str(tmp_path / "xdg"), RUNCTL_AWS_AMI=ami, DOCKER_HOST=docker_host,
               DOCKER_CONFIG=str(tmp_path / "cli-docker-config"))

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runctl", *args], cwd=docker_project, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return run


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
