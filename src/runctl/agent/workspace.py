"""The local side of an attempt: the checkpoint folder before it starts, and its environment."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from runctl.agent.sync import newest_entry, scan_folder
from runctl.errors import UsageError
from runctl.models import CheckpointInfo, JobSpec
from runctl.store.hashing import sha256_file
from runctl.store.manifest import newest_problem


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and prove we can write in it, or raise a UsageError saying so."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".runctl-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"checkpoint folder {folder} is not writable ({exc.strerror}); choose another with --checkpoint-dir"
        ) from exc


def clear_folder(folder: Path) -> None:
    """Empty ``folder``, as on a new machine."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def displace_strays(folder: Path, snapshot: CheckpointInfo | None, aside: Path) -> list[str]:
    """Move files the snapshot does not hold as they are out of ``folder`` into ``aside``.

    They are newer than what reached the store (an agent killed before its final upload)
    or unrelated (another job's, in a shared folder); restoring must not overwrite them
    silently, nor a fresh start take them into its snapshots, so they are kept aside.
    ``snapshot`` None (a fresh start): every file is moved.
    """
    expected = {f.path: f for f in snapshot.files} if snapshot is not None else {}
    moved = []
    for rel, (size, _mtime) in scan_folder(folder).items():
        entry = expected.get(rel)
        if entry is not None and entry.size == size and sha256_file(folder / rel) == entry.sha256:
            continue
        target = aside / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder / rel, target)
        moved.append(rel)
    return moved


def resume_path(folder: Path, snapshot: CheckpointInfo | None) -> Path | None:
    """The checkpoint the script should resume from: the snapshot's newest entry.

    A ``metadata.newest`` that does not name a top-level entry of the snapshot (a manifest
    that did not come through ``parse_manifest``) is not used: the newest entry the folder
    holds is taken instead, so the path never leads out of ``folder``.
    """
    if snapshot is None:
        return None
    name = snapshot.metadata.get("newest")
    if not name or newest_problem(name, snapshot.files):
        name = newest_entry(folder, scan_folder(folder))
    if name and (folder / name).exists():
        return folder / name
    return None


def command_for(spec: JobSpec, resume: Path | None) -> list[str]:
    extra = [arg.replace("{checkpoint}", str(resume)) for arg in spec.resume_args] if resume else []
    return [*spec.command, *extra]


def attempt_environment(base: Mapping[str, str], spec: JobSpec, *, attempt: int, resume: Path | None,
                        interrupt_file: Path, progress_file: Path) -> dict[str, str]:
    """The environment of "The script's side" in DESIGN.md, on top of ``base``."""
    env = {**base, **spec.env}
    for stale in ("RUNCTL_RESUME_FROM",):
        env.pop(stale, None)
    env.update(
        RUNCTL_CHECKPOINT_DIR=spec.checkpoint_dir,
        TRAINCTL_CHECKPOINT_DIR=spec.checkpoint_dir,
        RUNCTL_JOB_ID=spec.job_id,
        RUNCTL_ATTEMPT=str(attempt),
        RUNCTL_INTERRUPT_FILE=str(interrupt_file),
        RUNCTL_PROGRESS_FILE=str(progress_file),
        PYTHONUNBUFFERED="1",  # the script's output is a pipe to us: keep it live
    )
    if resume is not None:
        env["RUNCTL_RESUME_FROM"] = str(resume)
    return env


def timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def python_command(script: Path) -> list[str]:
    return [sys.executable, str(script)]
