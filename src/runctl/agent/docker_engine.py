"""On an instance: a Docker engine for a job that runs in an image, installed when missing.

The default AMI for CPU types (Amazon Linux 2023) has no Docker; the Deep Learning AMIs
have it. The resident agent runs as root there, so before it pulls a job's image it
installs the distribution's package (``docker`` with dnf or yum, ``docker.io`` with
apt-get) and starts the service. Nothing is installed anywhere else: not as another user,
and not for a job without an image.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable

from runctl.errors import RegistryError, UsageError

log = logging.getLogger(__name__)

INSTALL = {
    "dnf": [["dnf", "install", "-y", "docker"]],
    "yum": [["yum", "install", "-y", "docker"]],
    "apt-get": [["apt-get", "update", "-y"], ["apt-get", "install", "-y", "docker.io"]],
}
START = ["systemctl", "enable", "--now", "docker"]
INSTALL_TIMEOUT_S = 600.0


def ensure_engine(cli, *, which: Callable[[str], str | None] = shutil.which,
                  run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                  is_root: bool | None = None, wait_s: float = 60.0,
                  sleep: Callable[[float], None] = time.sleep) -> str | None:
    """Make ``cli`` (a DockerCli) reach an engine; returns what it did, None if nothing.

    Raises the DockerCli's own one-line error when it cannot: not root, no known package
    manager, or an engine that does not answer within ``wait_s`` of being started.
    """
    try:
        cli.ping()
        return None
    except (UsageError, RegistryError) as exc:  # not installed / the engine is not running
        missing = isinstance(exc, UsageError)
        if not (os.geteuid() == 0 if is_root is None else is_root):
            raise  # only root installs or starts an engine
    done = []
    if missing:
        manager = next((name for name in INSTALL if which(name)), None)
        if manager is None:
            raise UsageError("docker is not installed on this instance and there is no dnf, yum or apt-get "
                             "to install it; use an AMI with Docker (--ami) or --no-docker")
        for command in INSTALL[manager]:
            _run(run, command)
        done.append(f"installed docker with {manager}")
    _run(run, START)
    done.append("started the docker service")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            cli.ping()
            break
        except RegistryError:
            if time.monotonic() > deadline:
                raise
            sleep(1.0)
    log.info("docker engine: %s", ", ".join(done))
    return ", ".join(done)


def _run(run, command: list[str]) -> None:
    try:
        done = run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"cannot run {' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        raise RegistryError(f"{' '.join(command)} failed (exit {done.returncode}): {lines[-1] if lines else ''}")
