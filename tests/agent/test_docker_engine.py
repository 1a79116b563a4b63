"""Installing and starting a Docker engine on an instance, for a job in an image (fakes
for the package manager: the tests run as root on a machine whose packages they must not change)."""

from __future__ import annotations

import subprocess

import pytest

from runctl.agent.docker_engine import ensure_engine
from runctl.backends.docker import NOT_INSTALLED
from runctl.errors import RegistryError, UsageError

DOWN = RegistryError("cannot reach the Docker engine at unix:///var/run/docker.sock; start it (or set DOCKER_HOST)")


class Engine:
    """A docker CLI whose ping follows a script of outcomes (the last one repeats)."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)

    def ping(self):
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if outcome is not None:
            raise outcome


class Commands:
    def __init__(self, fail: str | None = None):
        self.ran, self.fail = [], fail

    def __call__(self, command, **kwargs):
        self.ran.append(command)
        code = 1 if self.fail and self.fail in command else 0
        return subprocess.CompletedProcess(command, code, "", "E: no such package\n" if code else "")


def which_only(*names):
    return lambda name: f"/usr/bin/{name}" if name in names else None


def test_a_running_engine_is_left_alone():
    commands = Commands()
    assert ensure_engine(Engine(None), run=commands, is_root=True) is None
    assert commands.ran == []


@pytest.mark.parametrize("manager,expected", [
    ("dnf", [["dnf", "install", "-y", "docker"]]),
    ("apt-get", [["apt-get", "update", "-y"], ["apt-get", "install", "-y", "docker.io"]]),
])
def test_a_missing_docker_is_installed_and_started(manager, expected):
    commands = Commands()
    did = ensure_engine(Engine(UsageError(NOT_INSTALLED), DOWN, DOWN, None), which=which_only(manager),
                        run=commands, is_root=True, sleep=lambda s: None)
    assert did == f"installed docker with {manager}, started the docker service"
    assert commands.ran == [*expected, ["systemctl", "enable", "--now", "docker"]]


def test_a_stopped_engine_is_started_without_installing():
    commands = Commands()
    did = ensure_engine(Engine(DOWN, None), which=which_only("dnf"), run=commands, is_root=True)
    assert did == "started the docker service"
    assert commands.ran == [["systemctl", "enable", "--now", "docker"]]


def test_nothing_is_installed_unless_root():
    commands = Commands()
    with pytest.raises(UsageError, match="docker is not installed"):
        ensure_engine(Engine(UsageError(NOT_INSTALLED)), which=which_only("dnf"), run=commands, is_root=False)
    assert commands.ran == []


def test_failures_are_one_line():
    with pytest.raises(UsageError, match="there is no dnf, yum or apt-get to install it; use an AMI with Docker"):
        ensure_engine(Engine(UsageError(NOT_INSTALLED)), which=which_only(), run=Commands(), is_root=True)
    with pytest.raises(RegistryError, match=r"^dnf install -y docker failed \(exit 1\): E: no such package$"):
        ensure_engine(Engine(UsageError(NOT_INSTALLED)), which=which_only("dnf"), run=Commands(fail="dnf"),
                      is_root=True)
    with pytest.raises(RegistryError, match="cannot reach the Docker engine"):  # started, never answers
        ensure_engine(Engine(DOWN), which=which_only("dnf"), run=Commands(), is_root=True, wait_s=0.0,
                      sleep=lambda s: None)
