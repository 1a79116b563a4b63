"""runctl docker build|push and runctl run --docker against a real engine and registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import pytest

# One Docker engine per test session: with pytest-xdist, every test that uses it runs in one worker.
pytestmark = pytest.mark.xdist_group("docker-engine")

MOTO_PASSWORD = "123456789012-auth-token"  # moto's ECR token password (tests/docker/conftest.py)


def runctl(project, env, *args, timeout=180):
    return subprocess.run([sys.executable, "-m", "runctl", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _repository(project) -> str:
    return tomllib.loads((project / ".runctl.toml").read_text())["docker"]["repository"]


def test_build_push_then_nothing_changed_pushes_nothing(docker_project, docker_env, registry, registry_tags):
    first = runctl(docker_project, docker_env, "-o", "json", "docker", "build", "--push")
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)
    assert one["built"] and one["pushed"] and one["created_repository"]
    assert "built from training/Dockerfile" in first.stderr and "runctl: pushed" in first.stderr
    repository = _repository(docker_project)
    assert registry_tags(registry, repository) == [one["image"].split(":")[1]]
    assert MOTO_PASSWORD not in first.stderr + first.stdout  # the password never shows

    again = runctl(docker_project, docker_env, "-o", "json", "docker", "push")
    assert again.returncode == 0, again.stderr
    two = json.loads(again.stdout)
    assert two["image"] == one["image"] and not two["built"] and not two["pushed"]
    assert "nothing pushed" in again.stderr and "not built" in again.stderr
    assert registry_tags(registry, repository) == [one["image"].split(":")[1]]

    # One file changed: a new content tag, built and pushed beside the first.
    (docker_project / "training" / "nonce.txt").write_text("changed")
    third = json.loads(runctl(docker_project, docker_env, "-o", "json", "docker", "build", "--push").stdout)
    assert third["built"] and third["pushed"] and third["image"] != one["image"]
    assert len(registry_tags(registry, repository)) == 2


def test_run_docker_rehearsal_resumes_in_a_new_container_to_the_straight_weights(
        docker_project, docker_env, straight_weights):
    steps = 4000
    done = runctl(docker_project, docker_env, "-o", "json", "run", "--docker", "training/train.py", "--rehearse", "1",
                  "--rehearse-at", "1.5s", "--", "--steps", str(steps))
    assert done.returncode == 0, done.stderr
    assert "running in Docker image proj-" in done.stderr
    report = json.loads(done.stdout)
    attempts = report["status"]["attempts"]
    assert [a["reason"] for a in attempts] == ["interrupted", "completed"]
    assert attempts[1]["resumed_from"] is not None  # the script saved on the forwarded SIGTERM
    final = json.loads([line for line in done.stderr.splitlines() if "weights_sha256" in line][-1])
    assert final == {"final_step": steps, "weights_sha256": straight_weights(steps)}
    left = subprocess.run(["docker", "ps", "-aq", "--filter", "name=runctl-"], env=docker_env,
                          capture_output=True, text=True)
    assert left.stdout.strip() == ""  # every attempt's container is gone


def test_docker_not_installed(docker_project, docker_env):
    env = {**docker_env, "PATH": os.path.dirname(sys.executable)}  # python, no docker
    done = runctl(docker_project, env, "docker", "build")
    assert done.returncode == 2
    assert done.stderr.strip() == "runctl: error: docker is not installed; install Docker or use --no-docker"


def test_engine_not_running(docker_project, docker_env, tmp_path):
    env = {**docker_env, "DOCKER_HOST": f"unix://{tmp_path}/missing.sock"}
    done = runctl(docker_project, env, "docker", "build")
    assert done.returncode == 3
    assert done.stderr.strip() == (f"runctl: error: cannot reach the Docker engine at unix://{tmp_path}/missing.sock; "
                                   "start it (or set DOCKER_HOST)")


def test_refused_login(docker_project, docker_env, registry):
    # The registry knows only moto's password; point the login at it with another user's token.
    # (moto's token is fixed, so the refusal is driven through [docker] login = none plus a
    # push: the registry answers 401, which must read as a refused login too.)
    config = docker_project / ".runctl.toml"
    config.write_text(config.read_text() + 'login = "none"\n')
    done = runctl(docker_project, docker_env, "docker", "push")
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"runctl: error: the registry {registry} refused the login"), lines[-1]


def test_refused_login_wrong_password(docker_host, registry, tmp_path):
    from runctl.backends.docker import DockerCli, Registry
    from runctl.errors import RegistryError

    cli = DockerCli({**os.environ, "DOCKER_CONFIG": str(tmp_path)})
    try:
        cli.login(Registry(registry, "AWS", "not-the-password"))
    except RegistryError as exc:
        assert str(exc).startswith(f"the registry {registry} refused the login as AWS: ")
        assert "not-the-password" not in str(exc) and exc.exit_code == 3
    else:
        raise AssertionError("the login was accepted")


def test_dockerfile_that_fails_to_build(docker_project, docker_env):
    (docker_project / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN python -c \"import sys; sys.exit('no such package: torchy')\"\n")
    done = runctl(docker_project, docker_env, "docker", "build")
    assert done.returncode == 3
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("runctl: error: docker build failed at step 3/3 (RUN python -c"), line
    assert "returned a non-zero code: 1" in line or "torchy" in line, line
