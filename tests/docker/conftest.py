"""Docker fixtures: a real engine and a real registry that requires a login, as ECR does.

- ``docker_host`` (session): the engine at DOCKER_HOST when it answers (.ci/run starts one);
  else this fixture starts dockerd itself (tests/docker/engine.sh, as root). When neither
  works the tests FAIL with the reason: Docker tests are never skipped silently.
  The local base image ``runctl-test/python:3.11`` is made when missing (nothing is pulled).
- ``registry`` (session): Debian's docker-registry on a free 127.0.0.1 port with htpasswd
  auth. The seam: moto's GetAuthorizationToken decodes to ``AWS:<account>-auth-token``, so
  that is the password the registry is given; runctl logs in with whatever the token says.
- ``docker_project``: training/ (train.py, Dockerfile) in tmp_path with a .runctl.toml naming
  the registry and the local base image; ``docker_env``: the CLI environment for it
  (moto, DOCKER_HOST, a private DOCKER_CONFIG).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENGINE = HERE / "engine.sh"
BASE_IMAGE = "runctl-test/python:3.11"
MOTO_PASSWORD = "123456789012-auth-token"  # what moto's ECR token decodes to (user AWS)


def _answers(host: str) -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], env={**os.environ, "DOCKER_HOST": host},
                          capture_output=True, timeout=30)
    return done.returncode == 0


@pytest.fixture(scope="session")
def docker_host(tmp_path_factory):
    host = os.environ.get("DOCKER_HOST", "")
    started = None  # the folder of a dockerd this fixture started, stopped at the end
    if not (host and _answers(host)):
        if shutil.which("dockerd") is None or os.geteuid() != 0:
            pytest.fail("Docker tests need a Docker engine: set DOCKER_HOST to a running one, or run as root "
                        "with dockerd installed (apt-get install docker.io); see .ci/run")
        folder = Path("/tmp") / f"runctl-dockerd-{os.getpid()}"  # short: unix socket paths are limited
        done = subprocess.run(["bash", str(ENGINE), "start", str(folder)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"could not start dockerd: {done.stderr.strip()}")
        host = done.stdout.strip()
        started = folder
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_HOST", host)
        done = subprocess.run(["bash", str(ENGINE), "base-image"], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"could not make the test base image {BASE_IMAGE}: {done.stderr.strip()}")
        yield host
    if started is not None:
        _stop_dockerd(started)


def _stop_dockerd(folder: Path) -> None:
    import signal

    try:
        pid = int((folder / "dockerd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):  # dockerd stops its containers first
            os.kill(pid, 0)
            time.sleep(0.1)
    except (OSError, ValueError):
        pass
    shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """``host:port`` of a registry that accepts only AWS / MOTO_PASSWORD."""
    if shutil.which("docker-registry") is None or shutil.which("htpasswd") is None:
        pytest.fail("Docker tests need docker-registry and htpasswd (apt-get install docker-registry apache2-utils)")
    folder = tmp_path_factory.mktemp("registry")
    subprocess.run(["htpasswd", "-Bbc", str(folder / "htpasswd"), "AWS", MOTO_PASSWORD], check=True,
                   capture_output=True)
    port = _free_port()
    (folder / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  htpasswd:\n    realm: runctl-test\n    path: {folder / 'htpasswd'}\n")
    with open(folder / "registry.log", "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(folder / "config.yml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # 401: up, and asking for a login
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"docker-registry did not start: {(folder / 'registry.log').read_text()[-500:]}")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def registry_tags():
    """``registry_tags(registry, repository)``: the tags the registry holds (its own API)."""
    return _registry_tags


def _registry_tags(registry: str, repository: str, password: str = MOTO_PASSWORD) -> list[str]:
    import base64
    import json

    request = urllib.request.Request(f"http://{registry}/v2/{repository}/tags/list")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return sorted(json.loads(response.read()).get("tags") or [])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


@pytest.fixture
def docker_project(tmp_path, registry):
    project = tmp_path / "proj"
    (project / "training").mkdir(parents=True)
    shutil.copy(REPO / "training" / "train.py", project / "training" / "train.py")
    shutil.copy(REPO / "training" / "Dockerfile", project / "training" / "Dockerfile")
    # A repository per test, and content of its own: no test sees another's image or tag.
    (project / "training" / "nonce.txt").write_text(uuid.uuid4().hex)
    (project / ".runctl.toml").write_text(
        f'[docker]\nregistry = "{registry}"\nrepository = "proj-{uuid.uuid4().hex[:8]}"\n'
        f'build_args = ["BASE_IMAGE={BASE_IMAGE}"]\n')
    return project


@pytest.fixture
def docker_env(tmp_path, docker_host, moto_reset, cli_env):
    env = dict(cli_env)
    env.update(DOCKER_HOST=docker_host, DOCKER_CONFIG=str(tmp_path / "docker-config"))
    return env
