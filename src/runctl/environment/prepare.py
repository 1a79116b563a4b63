"""The job's environment on this machine: present already, else restored from the store's
cache, else built (and then cached). What happened and how long it took goes to the job's
log and comes back as one line for the attempt's record (``runctl status``)."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runctl.environment import build, cache
from runctl.environment.background_upload import IN_BACKGROUND, BackgroundUpload
from runctl.environment.detect import EnvSource
from runctl.environment.key import environment_key, platform_tag
from runctl.errors import RunctlError, UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    key: str
    target: Path
    how: str  # "built", "restored" (from the store's cache) or "present" (on this machine already)
    seconds: float
    summary: str  # one line: how, how long
    upload: BackgroundUpload | None = None  # a built environment's copy to the store's cache, under way

    @property
    def python(self) -> Path:
        return build.venv_python(self.target)

    def activate(self, environ: Mapping[str, str]) -> dict[str, str]:
        return build.activated(environ, self.target)


def this_platform() -> str:
    return platform_tag(sys.platform, platform.machine(), platform.libc_ver())


def key_for(source: EnvSource, workdir: Path, setup: Sequence[str], *, python_version: str,
            platform_name: str) -> str:
    """The environment's cache key on this machine (see ``runctl.environment.key``)."""
    try:
        files = {name: (workdir / name).read_bytes() for name in source.files}
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename} of the job's environment: {exc.strerror}") from exc
    return environment_key(source, files, python=source.python or python_version, platform=platform_name,
                           setup=setup)


def prepare(store, source: EnvSource, *, workdir: Path, envs_root: Path, setup: Sequence[str] = (),
            log_file: BinaryIO, environ: Mapping[str, str] = os.environ, python: str = sys.executable,
            python_version: str = platform.python_version(), platform_name: str | None = None,
            leave_out: Iterable[Path] = (), uv: str | None = None,
            clock: Callable[[], float] = time.monotonic) -> Prepared:
    """Make the environment ``source`` declares (plus ``setup``) ready at ``envs_root/<key>``.

    ``workdir``: the job's folder (setup commands run there; what they write there is put
    back after a restore). ``python``: the interpreter used when the project asks for none
    or for one uv cannot provide. EnvironmentFailed when uv or a setup command fails.
    """
    started = clock()
    key = key_for(source, workdir, setup, python_version=python_version,
                  platform_name=platform_name or this_platform())
    target = envs_root / key
    say = _Say(log_file)
    say(f"{source.describe()}; key {key}" + (f", {len(setup)} setup command(s)" if setup else ""))
    if (target / cache.MARK).is_file():
        _put_back_work_files(target, workdir)
        return _done(say, key, target, "present", f"on this machine already ({clock() - started:.1f}s)",
                     started, clock)
    record = _cache_record(store, key, say)
    if record is not None:
        try:
            _clear(target)
            streamed_s = cache.restore(store, key, record, target)
            _put_back_work_files(target, workdir)
            _mark(target, key, "restored")
            return _done(say, key, target, "restored", f"in {clock() - started:.1f}s from the store's cache "
                         f"({_size(record.get('size', 0))} downloaded and unpacked at once in {streamed_s:.1f}s), "
                         "without resolving", started, clock)
        except RunctlError as exc:
            say(f"could not restore the cached environment ({exc}); building it")
    _clear(target)
    # A Python uv downloads goes inside the environment's folder, so that the archive holds the
    # interpreter its venv links to (the same path on the next instance).
    uv_environ = {**_with_uv_cache(environ, envs_root), "UV_PYTHON_INSTALL_DIR": str(target / "python")}
    builder = build.Builder(uv or build.find_uv(), workdir, log_file, uv_environ)
    builder.create_venv(target, source.python, python)
    builder.install(source, target)
    if setup:
        before = build.folder_state(workdir, leave_out)
        builder.run_setup(setup, target)
        _keep_work_files(workdir, build.changed_files(before, build.folder_state(workdir, leave_out)), target)
    built_s = clock() - started
    _mark(target, key, "built")
    # The script need not wait for the store's copy: it is packed and sent meanwhile.
    upload = BackgroundUpload(store, key, target, envs_root / ".upload",
                              {"source": source.to_dict(), "setup": list(setup), "build_seconds": built_s,
                               "platform": platform_name or this_platform()})
    say(f"environment built in {built_s:.1f}s; uploading it to the store's cache in the background")
    what = f"in {built_s:.1f}s, {IN_BACKGROUND}"
    return _done(say, key, target, "built", what, started, clock, upload)


class _Say:
    def __init__(self, log_file: BinaryIO) -> None:
        self.file = log_file

    def __call__(self, line: str) -> None:
        log.info("%s", line)
        self.file.write(f"runctl: {line}\n".encode())
        self.file.flush()


def _done(say: _Say, key: str, target: Path, how: str, detail: str, started: float, clock,
          upload: BackgroundUpload | None = None) -> Prepared:
    build.link_runctl(target)
    summary = f"{how} {detail}"
    say(f"environment {summary}")
    return Prepared(key, target, how, clock() - started, summary, upload)


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _cache_record(store, key: str, say: _Say) -> dict | None:
    try:
        return cache.read_record(store, key)
    except RunctlError as exc:
        say(f"cannot read the environment cache ({exc}); building the environment here")
        return None


def _with_uv_cache(environ: Mapping[str, str], envs_root: Path) -> dict[str, str]:
    """uv's download cache beside the environments unless the machine chose one: a fresh
    instance starts with an empty one, and so does every instance of the fake cloud."""
    env = dict(environ)
    env.setdefault("UV_CACHE_DIR", str(envs_root / ".uv-cache"))
    return env


def _clear(target: Path) -> None:
    """An unfinished environment folder (no mark: its build or restore was cut short) goes:
    runctl wrote every file in it."""
    if target.exists() and not (target / cache.MARK).exists():
        shutil.rmtree(target)


def _mark(target: Path, key: str, how: str) -> None:
    (target / cache.MARK).write_text(json.dumps({"key": key, "how": how, "at": time.time()}))


def _keep_work_files(workdir: Path, rels: Sequence[str], target: Path) -> None:
    """Copy what setup wrote in the job's folder into the environment (``work/``), so a
    restore elsewhere puts it back: setup runs once per environment, not per machine."""
    for rel in rels:
        copy = target / "work" / rel
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(workdir / rel, copy, follow_symlinks=False)


def _put_back_work_files(target: Path, workdir: Path) -> None:
    """The files setup wrote in the job's folder, where the folder lacks them (a new
    machine's copy of the code); a file there already is never replaced."""
    saved = target / "work"
    if not saved.is_dir():
        return
    for root, _dirs, files in os.walk(saved):
        for name in files:
            source = Path(root) / name
            rel = source.relative_to(saved)
            if os.path.lexists(workdir / rel):
                continue
            (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, workdir / rel, follow_symlinks=False)
