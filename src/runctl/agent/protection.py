"""Never a silent "protected": the warnings for checkpoints runctl did not keep.

A script that saves where runctl does not look (its own ``checkpoints/`` folder, say) ends
"completed" with nothing in the store; without these lines that looks like safety.
``find_checkpoint_like`` looks at the working folder (bounded: a huge project is not walked
for ever); ``protection_warnings`` decides what to say, purely.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from runctl.models import Attempt, JobSpec

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")
CHECKPOINT_DIR_PREFIX = "checkpoint-"  # the Hugging Face Trainer's checkpoint-500/
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})  # never checkpoints, often huge
MTIME_SLACK_S = 2.0  # filesystems that keep coarse times must not hide a file written at the start
NAMES_SHOWN = 5

log = logging.getLogger(__name__)


def fix_options(folder: str = "checkpoints") -> str:
    return f'--checkpoint-dir {folder} --resume-args "--resume {{checkpoint}}"'


def find_checkpoint_like(root: Path, *, since: float, skip: Sequence[Path] = (), max_depth: int = 4,
                         max_entries: int = 5000) -> tuple[str, ...]:
    """Paths (relative to ``root``, "/"-separated, folders ending in "/") of checkpoint-like
    files and ``checkpoint-*`` folders changed since ``since``: outside ``skip``, hidden
    folders (.runctl, .git, .venv) and folders that never hold checkpoints. At most
    ``max_entries`` entries, ``max_depth`` levels down, are looked at."""
    root, skipped = Path(root).resolve(), {Path(p).resolve() for p in skip}
    found: list[str] = []
    pending, seen = [(root, 0)], 0
    while pending and seen < max_entries:
        folder, depth = pending.pop(0)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue  # gone or unreadable: not ours to judge
        for entry in entries:
            seen += 1
            if seen > max_entries:
                break
            try:
                is_dir, changed = entry.is_dir(follow_symlinks=False), entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            path = Path(entry.path)
            if is_dir and (entry.name.startswith(".") or entry.name in SKIPPED_DIRS or path in skipped):
                continue
            recent = changed >= since - MTIME_SLACK_S
            if is_dir and entry.name.startswith(CHECKPOINT_DIR_PREFIX):
                if recent:
                    found.append(path.relative_to(root).as_posix() + "/")
            elif is_dir:
                if depth + 1 < max_depth:
                    pending.append((path, depth + 1))
            elif recent and entry.name.endswith(CHECKPOINT_SUFFIXES):
                found.append(path.relative_to(root).as_posix())
    return tuple(found)


def common_folder(paths: Sequence[str]) -> str:
    """The one folder holding all ``paths`` (relative), or "" when that is the working folder."""
    parents = [os.path.dirname(p.rstrip("/")) for p in paths]
    if not parents or "" in parents:
        return ""
    return os.path.commonpath(parents)


def protection_warnings(job_id: str, attempts: Sequence[Attempt], folder: str, found: Sequence[str],
                        state: str = "completed") -> tuple[str, ...]:
    """The warning lines for a job that ended in ``state``: none in the store (no attempt
    restored or committed a snapshot), and checkpoint-like ``found`` outside its ``folder``. Pure."""
    parent = common_folder(found)
    lines = []
    if not any(a.final_snapshot is not None or a.resumed_from is not None for a in attempts):
        # An interrupted job resumes elsewhere: from scratch, which is what the user must hear.
        ended = "was interrupted" if state == "interrupted" else "ended"
        lines.append(f"job {job_id} {ended} with no checkpoint in the store: nothing was written in its "
                     f"checkpoint folder {folder} (RUNCTL_CHECKPOINT_DIR). Save checkpoints there, or point "
                     f"runctl at the script's own folder: {fix_options(parent or 'checkpoints')}")
    if found:
        names = ", ".join(found[:NAMES_SHOWN]) + (f" and {len(found) - NAMES_SHOWN} more"
                                                   if len(found) > NAMES_SHOWN else "")
        fix = (f"use --checkpoint-dir {parent}" if parent
               else "save them in a folder of their own and use --checkpoint-dir FOLDER")
        lines.append(f"the script wrote checkpoint-like files outside its checkpoint folder, which runctl "
                     f"does not protect: {names} ({fix})")
    return tuple(lines)


def job_end_warnings(spec: JobSpec, attempts: Sequence[Attempt], state: str, *, since: float) -> tuple[str, ...]:
    """The warnings for ``spec``'s job, ended now in ``state``, its run started at ``since``:
    the working folder looked at, then ``protection_warnings``."""
    workdir, folder = Path(spec.workdir or "."), Path(spec.checkpoint_dir)
    try:
        found = find_checkpoint_like(workdir, since=since, skip=(folder,))
    except (OSError, RuntimeError, ValueError) as exc:  # a failed look must not change how the job ends
        log.warning("could not look for checkpoint-like files in %s: %s", workdir, exc)
        found = ()
    return protection_warnings(spec.job_id, attempts, shown_folder(folder, workdir), found, state)


def shown_folder(folder: Path, workdir: Path) -> str:
    """The checkpoint folder as the user knows it: relative to the working folder when inside."""
    try:
        return Path(folder).resolve().relative_to(Path(workdir).resolve()).as_posix()
    except ValueError:
        return str(folder)
