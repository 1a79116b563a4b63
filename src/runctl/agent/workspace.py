"""The local side of an attempt: the checkpoint folder before it starts, and its environment."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from runctl.agent.sync import newest_entry, scan_folder
from runctl.errors import RunctlError, UsageError
from runctl.fsutil import TEMP_MARKER
from runctl.models import CheckpointInfo, JobSpec
from runctl.store.hashing import sha256_file
from runctl.store.manifest import newest_problem


#: runctl's mark on a checkpoint folder it prepared: a file holding the id of the job the
#: folder belongs to. Its name carries TEMP_MARKER, so no snapshot captures it and no
#: manifest can name it (a restore never overwrites it).
JOB_MARK = f"{TEMP_MARKER}job"

#: Folders that are never a job's checkpoint folder, nor is anything below them.
_SYSTEM_TREES = ("/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys",
                 "/usr", "/System", "/private/etc")
#: Folders shared by the whole machine: never a checkpoint folder, though a folder below may be
#: (/opt/ml/checkpoints on SageMaker, /dev/shm/job, /var/tmp/job ...).
_SYSTEM_FOLDERS = ("/", "/dev", "/dev/shm", "/home", "/media", "/mnt", "/opt", "/root", "/run", "/srv", "/tmp",
                   "/var", "/var/lib", "/var/log", "/var/tmp", "/Applications", "/Library", "/Users", "/Volumes",
                   "/private", "/private/tmp", "/private/var")


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def checkpoint_folder_problem(folder: Path, *, home: Path | None, workdirs: Iterable[Path],
                              store_root: Path | None, job_files: Iterable[Path]) -> str | None:
    """Why ``folder`` may not be a job's checkpoint folder, or None when it may. Pure; every
    path absolute and resolved.

    Every file in a checkpoint folder goes into the job's snapshots and a rehearsal empties
    it between attempts, so it must not be, nor contain, what the machine, the user, the
    project or the store keep elsewhere.
    """
    if folder == home:
        return "is the home folder"
    if str(folder) in _SYSTEM_FOLDERS or any(_within(folder, Path(tree)) for tree in _SYSTEM_TREES):
        return "is a system folder"
    if home is not None and _within(home, folder):
        return f"contains the home folder {home}"
    for workdir in workdirs:
        if _within(workdir, folder):
            return ("is the job's working folder (the project)" if workdir == folder
                    else f"contains the job's working folder {workdir} (the project)")
    if store_root is not None:
        if _within(store_root, folder):
            return f"holds the checkpoint store {store_root}"
        if _within(folder, store_root):
            return f"is inside the checkpoint store {store_root}"
    for path in job_files:
        if _within(path, folder):
            return f"holds the job's own file {path}"
    return None


def code_folder_problem(rel: str) -> str | None:
    """Why ``rel`` cannot name a checkpoint folder inside a job's code folder, or None. Pure.

    A job sent to an instance (``runctl aws train|run --checkpoint-dir``) keeps its
    checkpoints in a folder of its code folder there (the synced project), as a local run
    keeps them in a folder of the project; the path must stay inside it.
    """
    path = PurePosixPath(rel)
    if path.is_absolute():
        return "is not relative to the project"
    if ".." in path.parts:
        return "leads out of the project"
    return None


def check_checkpoint_folder(spec: JobSpec) -> None:
    """Refuse, with a UsageError, a checkpoint folder that ``checkpoint_folder_problem``
    finds wrong on this machine. Before anything is written in it."""
    from runctl.store import parse_store_url

    folder = Path(spec.checkpoint_dir).resolve()
    workdir = Path(spec.workdir or ".").resolve()
    scheme, location, _prefix = parse_store_url(spec.store_url)
    try:
        home = Path.home().resolve()
    except RuntimeError:  # no HOME and no passwd entry (a container run as another uid)
        home = None
    problem = checkpoint_folder_problem(
        folder, home=home, workdirs=(workdir, Path.cwd().resolve()),
        store_root=Path(location).resolve() if scheme == "file" else None,
        job_files=_files_named(spec.command, workdir),
    )
    if problem:
        raise UsageError(f"checkpoint folder {folder} {problem}; give the job a folder of its own "
                         "with --checkpoint-dir (or [checkpoint] dir in .runctl.toml)")


def _files_named(command: Iterable[str], workdir: Path) -> list[Path]:
    """The existing files the command's arguments name (its interpreter, its script ...):
    where each sits, and where it leads when it is a symlink (a venv's python)."""
    found = []
    for arg in command:
        try:
            path = workdir / arg
            if path.is_file():
                found += [path.parent.resolve() / path.name, path.resolve()]
        except (OSError, ValueError):
            continue  # an argument too long or odd to be a path
    return found


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


# -- whose files: runctl touches only what it wrote -----------------------------------------

def folder_owner(folder: Path) -> str | None:
    """The job whose mark ``folder`` carries, or None when it carries none."""
    try:
        return (folder / JOB_MARK).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _holds_as_is(folder: Path, rel: str, expected: dict) -> bool:
    entry = expected.get(rel)
    path = folder / rel
    return (entry is not None and not path.is_symlink() and path.is_file() and path.stat().st_size == entry.size
            and sha256_file(path) == entry.sha256)


def _entries(folder: Path) -> list[str]:
    """Every file, symlink or other non-folder below ``folder`` but runctl's mark, relative."""
    found = []
    for root, dirs, files in os.walk(folder):
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]  # os.walk does not enter them
        for name in (*files, *links):
            rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if rel != JOB_MARK:
                found.append(rel)
    return sorted(found)


def _first_few(rels: list[str]) -> str:
    shown = ", ".join(rels[:3])
    return f"{shown} and {len(rels) - 3} more" if len(rels) > 3 else shown


def refuse_a_foreign_folder(folder: Path, job_id: str, snapshot: CheckpointInfo | None) -> None:
    """UsageError unless ``folder`` holds only files runctl wrote for job ``job_id``: it carries
    the job's mark, or nothing but files the job's latest ``snapshot`` holds as they are (a
    folder filled by ``runctl checkpoint restore``). Nothing is moved or changed."""
    owner = folder_owner(folder)
    if owner == job_id:
        return
    expected = {f.path: f for f in snapshot.files} if snapshot is not None else {}
    in_the_way = [rel for rel in _entries(folder) if not _holds_as_is(folder, rel, expected)]
    if owner is not None:
        holding = f" (it holds {_first_few(in_the_way)})" if in_the_way else ""
        raise UsageError(f"checkpoint folder {folder} belongs to job {owner}{holding}; give job {job_id} a "
                         f"folder of its own with --checkpoint-dir, or empty it, {JOB_MARK} included, "
                         f"once job {owner} is done with it")
    if in_the_way:
        raise UsageError(f"checkpoint folder {folder} holds {len(in_the_way)} file(s) runctl did not write for "
                         f"job {job_id}: {_first_few(in_the_way)}; runctl never moves them: empty the folder or "
                         "give the job another with --checkpoint-dir")


def claim_folder(folder: Path, job_id: str, snapshot: CheckpointInfo | None) -> list[str]:
    """Mark ``folder`` as job ``job_id``'s, after ``refuse_a_foreign_folder``. Returns the
    job's own files the snapshot does not hold as they are (all of them when None): written
    by an earlier attempt after its last snapshot, to be set aside before a restore."""
    refuse_a_foreign_folder(folder, job_id, snapshot)
    try:
        with open(folder / JOB_MARK, "x") as mark:  # "x": of two jobs claiming the folder at once, one wins
            mark.write(job_id + "\n")
    except FileExistsError:
        owner = folder_owner(folder)
        if owner != job_id:
            raise UsageError(f"checkpoint folder {folder} was claimed by job {owner or 'another job'} just now; "
                             f"give job {job_id} a folder of its own with --checkpoint-dir") from None
    expected = {f.path: f for f in snapshot.files} if snapshot is not None else {}
    return [rel for rel in sorted(scan_folder(folder)) if not _holds_as_is(folder, rel, expected)]


def set_aside(folder: Path, rels: Iterable[str], aside: Path) -> list[str]:
    """Move the job's own files ``rels`` out of ``folder`` into ``aside``, copying them where
    ``aside`` is on another file system (a rename cannot cross one)."""
    moved = []
    for rel in rels:
        target = aside / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(folder / rel, target)
        moved.append(rel)
    return moved


def clear_job_files(folder: Path, job_id: str) -> None:
    """Delete what job ``job_id`` wrote in ``folder``, as on a new machine (a rehearsal).

    The folder held nothing else when the job claimed it, so that is every file and symlink
    in it but the mark; folders left empty by that go too. Refused (RunctlError) when the
    folder no longer carries the job's mark: then it is not the job's to empty.
    """
    owner = folder_owner(folder)
    if owner != job_id:
        raise RunctlError(f"not emptying checkpoint folder {folder} between attempts: it is no longer job "
                          f"{job_id}'s ({JOB_MARK} names {owner or 'no job'})")
    emptied = set()
    for rel in _entries(folder):
        (folder / rel).unlink()
        emptied.update(p for p in (folder / rel).parents if _within(p, folder) and p != folder)
    for path in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()


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
