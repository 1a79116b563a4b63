"""Fixtures of the fake-cloud acceptance tests: the cloud (which must end with nothing of
the test left running), a user's project, and the real CLI run in it.

Each test has a harness of its own (agents, metadata emulators, folders, the leftovers
check) over the session's moto server (``moto_server``, reset by the harness at its start)
with the session's instance interpreter and image (``fake_cloud_options``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runctl.testing.cloud import FakeCloud

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cloud(tmp_path, request, fake_cloud_options):
    """The fake cloud; ``@pytest.mark.fake_cloud(**kwargs)`` passes FakeCloud options (a
    harness of the test's own either way; ``endpoint=None`` gives it a server of its own too)."""
    marker = request.node.get_closest_marker("fake_cloud")
    options = {"notice_deadline_s": 6.0, **fake_cloud_options, **(marker.kwargs if marker else {})}
    # A two-minute notice compressed to 6 s: time enough for the final snapshot on a busy machine.
    with FakeCloud(tmp_path / "cloud", **options) as fake:
        yield fake
        left = wait_until_nothing_left(fake)
        assert left == []


def wait_until_nothing_left(fake: FakeCloud, timeout: float = 30.0) -> list[str]:
    """What is still left after ``timeout``: an agent that ended its job shuts its machine down
    a moment after the job's last record is written."""
    import time

    deadline = time.monotonic() + timeout
    while (left := fake.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    (folder / "training").mkdir(parents=True)
    shutil.copy(REPO / "training" / "train.py", folder / "training" / "train.py")
    (folder / "README.md").write_text("a user's project\n")
    return folder


def cli_env(cloud: FakeCloud, project: Path, **extra: str) -> dict[str, str]:
    # cloud.image_id: the image FakeCloud looked up at its start (moto's first), asked once.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_", "AWS_"))}
    env.update(cloud.env, XDG_CONFIG_HOME=str(project.parent / "xdg"), RUNCTL_AWS_AMI=cloud.image_id, **extra)
    return env


@pytest.fixture
def runctl(cloud, project):
    """``runctl(*args, timeout=120, **env)``: ``python -m runctl ARGS`` in the project, against
    the fake cloud, to its end (a CompletedProcess with text output)."""

    def run(*args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runctl", *args], cwd=project,
                              env=cli_env(cloud, project, **extra), capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def runctl_bg(cloud, project):
    """``runctl_bg(*args, **env)``: the same, started in the background (a Popen with text
    pipes); killed at the end of the test if still running."""
    started: list[subprocess.Popen] = []

    def start(*args: str, **extra: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "runctl", *args], cwd=project,
                                env=cli_env(cloud, project, **extra), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
