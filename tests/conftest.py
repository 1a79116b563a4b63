"""Fixtures shared by every test: an S3 emulator, fresh buckets, both store kinds, and
isolation from the developer's own configuration.

- ``moto_server`` (session): a moto server on 127.0.0.1; yields its URL. While it runs,
  AWS_ENDPOINT_URL points at it and fake credentials are set, so every boto3 client made
  by the code under test talks to it without being told.
- ``moto_reset``: clears moto's state (all services) before the test.
- ``fake_cloud_options`` (session): the FakeCloud options that make a harness take its turn
  on ``moto_server``: its endpoint, the instance interpreter (runctl and its dependencies
  only) and the image, each made or found once.
- ``s3_client``: a boto3 S3 client on the emulator.
- ``s3_bucket``: a fresh, empty bucket (unique name); returns its name.
- ``local_store`` / ``s3_store``: a LocalStore in tmp_path / an S3Store on a fresh bucket
  under a prefix. ``any_store``: each of the two in turn (parametrized "local", "s3").
  ``memory_store``: a fresh ``runctl.testing.MemoryStore`` (tests/store/test_store.py runs
  the protocol suite against it as well).
- autouse ``_isolate_config``: XDG_CONFIG_HOME is a temporary folder and no RUNCTL_* /
  TRAINCTL_* variable leaks in from the environment.
- ``cli_env`` / ``runctl_cli``: the clean environment of, and a runner for, ``python -m
  runctl ...`` in tmp_path. ``train_here``: training/train.py copied into tmp_path.
  ``straight_weights(steps)`` (session): weights_sha256 of train.py run without runctl.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Unimplemented moto calls answer HTTP 500; do not retry them slowly.
    "AWS_MAX_ATTEMPTS": "2",
    # moto has no Price List: a closed port makes `aws create` fall back to its table at once.
    "AWS_ENDPOINT_URL_PRICING": "http://127.0.0.1:9",
    # Keep the developer's ~/.aws out of the tests.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
AWS_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@pytest.fixture(scope="session")
def moto_server():
    """A moto server for the whole session; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in AWS_UNSET:
            mp.delenv(name, raising=False)
        for name, value in AWS_TEST_ENV.items():
            mp.setenv(name, value)
        mp.setenv("AWS_ENDPOINT_URL", url)
        try:
            yield url
        finally:
            server.stop()


@pytest.fixture
def moto_reset(moto_server):
    """Clear moto's state so nothing leaks from an earlier test."""
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST", data=b"")
    # A reset re-initialises every backend in use: on a loaded 2-core machine that took more
    # than 10 s (five setup errors in one CI run), though it takes about a second alone.
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
    return moto_server


@pytest.fixture(scope="session")
def fake_cloud_options(tmp_path_factory, moto_server) -> dict[str, str]:
    import boto3

    from runctl.testing.agent_env import runctl_only_env
    from runctl.testing.cloud import first_image

    python = str(runctl_only_env(tmp_path_factory.mktemp("agent-env") / "venv"))
    image = first_image(boto3.client("ec2", endpoint_url=moto_server, region_name="us-east-1"))
    return {"endpoint": moto_server, "agent_python": python, "image_id": image}


@pytest.fixture
def s3_client(moto_server):
    import boto3

    return boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")


@pytest.fixture
def s3_bucket(moto_reset, s3_client) -> str:
    name = f"runctl-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def local_store(tmp_path):
    from runctl.store.local import LocalStore

    return LocalStore(tmp_path / "store")


@pytest.fixture
def s3_store(s3_bucket):
    from runctl.store.s3 import S3Store

    # No endpoint_url: the store must find moto through AWS_ENDPOINT_URL like any user would.
    return S3Store(s3_bucket, "team/runs")


@pytest.fixture
def memory_store():
    from runctl.testing import MemoryStore

    return MemoryStore()


@pytest.fixture(params=["local", "s3"])
def any_store(request):
    """Each store implementation in turn; ``request.param`` says which."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture(autouse=True)
def _isolate_config(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    for name in list(os.environ):
        if name.startswith(("RUNCTL_", "TRAINCTL_")):
            monkeypatch.delenv(name)


# -- driving the real command line (tests of the agent and runctl run) --------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "training" / "train.py"


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """The environment of a runctl subprocess: no RUNCTL_* / TRAINCTL_* variable, and
    XDG_CONFIG_HOME in tmp_path so no user configuration is read."""
    xdg = tmp_path / ".xdg-config"
    xdg.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    env["XDG_CONFIG_HOME"] = str(xdg)
    return env


@pytest.fixture
def runctl_cli(tmp_path, cli_env):
    """``runctl_cli(*args, cwd=tmp_path, timeout=120)``: run ``python -m runctl ARGS`` to the
    end and return the CompletedProcess (text stdout and stderr)."""

    def run(*args, cwd=None, timeout: float = 120, env: dict | None = None):
        return subprocess.run([sys.executable, "-m", "runctl", *map(str, args)], cwd=cwd or tmp_path,
                              env=env or cli_env, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def train_here(tmp_path):
    """training/train.py copied to tmp_path/training/train.py; returns the relative path."""
    (tmp_path / "training").mkdir(exist_ok=True)
    shutil.copy(TRAIN_SCRIPT, tmp_path / "training" / "train.py")
    return "training/train.py"


@pytest.fixture(scope="session")
def straight_weights(tmp_path_factory):
    """``straight_weights(steps)``: the weights_sha256 of ``python training/train.py --steps N``
    run straight through, without runctl (computed once per N in a session)."""
    cache: dict[int, str] = {}

    def weights(steps: int) -> str:
        if steps not in cache:
            folder = tmp_path_factory.mktemp("straight")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
            done = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--steps", str(steps)], cwd=folder, env=env,
                                  capture_output=True, text=True, timeout=120, check=True)
            cache[steps] = json.loads(done.stdout.strip().splitlines()[-1])["weights_sha256"]
        return cache[steps]

    return weights
