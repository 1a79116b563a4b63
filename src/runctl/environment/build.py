"""Build a job's environment with uv: a virtual environment, the project's dependencies,
then the job's setup commands. Every subprocess writes to the job's log.

The environment lives in one folder, ``<target>``: ``venv/`` (the virtual environment)
and ``work/`` (files the setup commands wrote in the job's folder, put back there when the
environment is restored on another machine). A virtual environment is not relocatable in
general (compiled paths, an editable install's links), so the agent builds it at a fixed
path (``<runctl home>/envs/<key>``: /var/lib/runctl/envs/<key> on every instance of an AMI)
and a restore unpacks it to the same path. It is also made with ``uv venv --relocatable``,
so that its scripts keep working where the home differs (the fake cloud's instances).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runctl.environment.detect import EnvSource
from runctl.errors import EnvironmentFailed, UsageError

TAIL_LINES = 20


def venv_python(target: Path) -> Path:
    return target / "venv" / "bin" / "python"


def find_uv() -> str:
    """The uv binary runctl depends on (the ``uv`` package's), else one on PATH."""
    import shutil

    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise UsageError("uv is not installed beside runctl; install it (pip install uv), it builds the job's "
                     "environment")


def activated(environ: Mapping[str, str], target: Path) -> dict[str, str]:
    """``environ`` with the environment at ``target`` activated (VIRTUAL_ENV, PATH)."""
    env = {k: v for k, v in environ.items() if k not in ("PYTHONHOME", "CONDA_PREFIX")}
    env["VIRTUAL_ENV"] = str(target / "venv")
    env["PATH"] = os.pathsep.join([str(target / "venv" / "bin"), environ.get("PATH", os.defpath)])
    return env


@dataclass
class Builder:
    """Builds one environment. ``environ``: the base environment of every subprocess (uv
    reads its index settings there: UV_INDEX_URL, UV_FIND_LINKS, UV_OFFLINE ...)."""

    uv: str
    workdir: Path
    log: BinaryIO
    environ: Mapping[str, str]

    def say(self, line: str) -> None:
        self.log.write(f"runctl: {line}\n".encode())
        self.log.flush()

    def _run(self, argv: Sequence[str], what: str, env: Mapping[str, str] | None = None, shell: bool = False) -> None:
        shown = argv[0] if shell else " ".join(argv)
        self.say(f"$ {shown}")
        proc = subprocess.run(argv[0] if shell else list(argv), shell=shell, cwd=self.workdir,
                              env=dict(env if env is not None else self._uv_env()),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.log.write(proc.stdout)
        self.log.flush()
        if proc.returncode != 0:
            tail = tuple(proc.stdout.decode(errors="replace").splitlines()[-TAIL_LINES:])
            raise EnvironmentFailed(f"{what} failed (exit {proc.returncode}): {shown}", tail=tail,
                                    exit_code=proc.returncode)

    def _uv_env(self) -> dict[str, str]:
        # Not the agent's own virtual environment: uv would take it for the target.
        return {k: v for k, v in self.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}

    def create_venv(self, target: Path, python_request: str, fallback_python: str) -> None:
        """The virtual environment, with the Python asked for when uv can provide it (found
        on the machine or downloaded), else with ``fallback_python`` (the agent's)."""
        venv = str(target / "venv")
        if python_request:
            try:
                self._run([self.uv, "venv", "--relocatable", "--python", python_request, venv],
                          f"uv venv (Python {python_request})")
                return
            except EnvironmentFailed:
                self.say(f"uv cannot provide Python {python_request} here; using {fallback_python}")
        self._run([self.uv, "venv", "--relocatable", "--clear", "--python", fallback_python, venv], "uv venv")

    def install(self, source: EnvSource, target: Path) -> None:
        python = str(venv_python(target))
        if source.kind == "uv-project" and "uv.lock" in source.files:
            # Its dependencies only: the project itself is the job's code folder, the working
            # folder of every attempt (an editable install would link to this machine's path).
            # --frozen: as locked, and the lock never rewritten.
            env = {**self._uv_env(), "UV_PROJECT_ENVIRONMENT": str(target / "venv")}
            self._run([self.uv, "sync", "--frozen", "--no-install-project", "--python", python], "uv sync", env=env)
        elif source.kind == "uv-project":
            # No lock: its [project] dependencies, without `uv sync` writing a uv.lock into the project.
            self._run([self.uv, "pip", "install", "--python", python, "-r", "pyproject.toml"], "uv pip install")
        elif source.kind == "requirements":
            self._run([self.uv, "pip", "install", "--python", python, "-r", source.files[0]], "uv pip install")
        elif source.kind == "inline" and source.dependencies:
            self._run([self.uv, "pip", "install", "--python", python, *source.dependencies], "uv pip install")

    def run_setup(self, commands: Iterable[str], target: Path) -> None:
        """The job's setup commands, in the job's folder, with the environment activated.
        Each is a shell command line the user wrote in [jobs.NAME] setup."""
        env = activated(self.environ, target)
        for n, command in enumerate(commands, 1):
            self._run([command], f"setup command {n}", env=env, shell=True)


def folder_state(folder: Path, leave_out: Iterable[Path] = ()) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` (relative path -> size, mtime in ns), but those under
    ``leave_out``: what setup commands changed is the difference of two of these."""
    skipped = [Path(p).resolve() for p in leave_out]
    state = {}
    for root, dirs, files in os.walk(folder):
        here = Path(root).resolve()
        dirs[:] = [d for d in dirs if (here / d).resolve() not in skipped]
        for name in files:
            path = Path(root) / name
            try:
                stat = path.lstat()
            except OSError:
                continue
            state[os.path.relpath(path, folder).replace(os.sep, "/")] = (stat.st_size, stat.st_mtime_ns)
    return state


def changed_files(before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]) -> list[str]:
    """Files new or changed from ``before`` to ``after``. Pure."""
    return sorted(rel for rel, stat in after.items() if before.get(rel) != stat)


def link_runctl(target: Path) -> None:
    """Let the job's scripts ``import runctl`` (the in-script API: checkpoint_dir(),
    save_atomic() ...) from the environment, with nothing else of the agent's: a folder
    holding only a link to this runctl package, named by a .pth file. Rewritten on every
    machine, since the agent's own install may sit elsewhere there."""
    import runctl

    folder = target / "runctl-link"
    folder.mkdir(exist_ok=True)
    link = folder / "runctl"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(runctl.__file__).resolve().parent)
    for site_packages in (target / "venv" / "lib").glob("python*/site-packages"):
        (site_packages / "_runctl_in_script_api.pth").write_text(f"{folder}\n")
