"""A job's checkpoints from outside the job: for evaluation, serving and inspection.

Which snapshots, as in ``runctl checkpoint ...``: a job id (in the default store, or in
``store=``), a URL naming a job (``<store>/jobs/<id>``, also ``.../checkpoints``), or any
folder of snapshot folders. The default store is ``[checkpoint] store`` from the
configuration, else ``.runctl/store`` in the current folder::

    from runctl.checkpoints import fetch_latest

    fetched = fetch_latest("train-1a2b3c", "eval/checkpoint")
    fetched = fetch_latest("s3://bucket/runctl/jobs/train-1a2b3c", "eval/checkpoint")
    fetched.newest     # the newest checkpoint in it, as RUNCTL_RESUME_FROM would name it
    fetched.seq        # which snapshot

The files are verified (size and sha256) before they are put in place, and nothing is
written outside the destination folder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runctl.errors import NotFoundError, UsageError
from runctl.models import CheckpointInfo

log = logging.getLogger(__name__)

_JOB_URL = re.compile(r"^(?:(?P<root>.*?)/)?jobs/(?P<job>[^/]+)(?:/checkpoints)?/*$")


@dataclass(frozen=True)
class FetchedCheckpoint:
    folder: Path  # the destination folder, holding the snapshot's files
    newest: Path | None  # its newest checkpoint (file or folder); None if it is empty
    seq: int
    snapshot: CheckpointInfo


def default_store_url() -> str:
    """``[checkpoint] store`` from the configuration, else ``.runctl/store`` here."""
    from runctl.config import load_config

    return load_config().checkpoint.store or str(Path.cwd() / ".runctl" / "store")


def jobs_hint(store) -> str:
    jobs = store.list_dirs("jobs/")
    if not jobs:
        return f"there are no jobs in {store.url}"
    shown = ", ".join(jobs[:10]) + (", ..." if len(jobs) > 10 else "")
    return f"jobs in {store.url}: {shown}"


def open_snapshots(target: str | None = None, *, store: str | None = None, job: str | None = None,
                   default_store: str | Sequence[str] | None = None):
    """The ``Snapshots`` that ``target`` / ``store`` / ``job`` name (see the module docstring).

    ``target`` is a job id when it is neither a URL nor an existing folder and no ``job`` is
    given. ``default_store``: the store (or stores, looked in in order: the first that holds
    the job wins) of a job named without one. Raises UsageError when the arguments name no
    job's checkpoints.
    """
    from runctl.store import layout, open_store
    from runctl.store.snapshots import Snapshots

    if target and job is None and layout.JOB_ID_PATTERN.match(target) and not Path(target).exists():
        target, job = None, target
    if target and store:
        raise UsageError("give the store either as TARGET or with --store, not both")
    if job is not None and not layout.JOB_ID_PATTERN.match(job):
        raise UsageError(f"{job!r} is not a job id")
    if target and job is None:
        match = _JOB_URL.match(target)
        if match and layout.JOB_ID_PATTERN.match(match["job"]):
            root = match["root"]
            target, store, job = None, "." if root is None else root or "/", match["job"]
        else:  # a folder of snapshot folders
            snaps = Snapshots(open_store(target), "")
            if not snaps.all_seqs() and snaps.store.list_dirs("jobs/"):
                raise UsageError(f"{target} is a store, not a job's checkpoints; add --job JOB_ID "
                                 f"({jobs_hint(snaps.store)})")
            return snaps
    if target or store:
        opened = open_store(target or store)
    else:
        defaults = [default_store] if isinstance(default_store, str) else list(default_store or ())
        opened = _store_holding(job, [open_store(url) for url in defaults or [default_store_url()]])
    if job is None:
        raise UsageError(f"which job? Use --job JOB_ID or a TARGET URL ending in /jobs/JOB_ID ({jobs_hint(opened)})")
    return Snapshots(opened, layout.checkpoints_prefix(job))


def _store_holding(job: str | None, stores: list):
    """The first of ``stores`` that holds ``job`` (any of its files), else the first."""
    from runctl.store import layout

    from runctl.errors import RunctlError

    if job is not None:
        for candidate in stores:
            try:
                if next(iter(candidate.list(layout.job_prefix(job))), None) is not None:
                    return candidate
            except RunctlError as exc:  # the first store's errors show when it is used
                if candidate is stores[0]:
                    break
                log.info("cannot look for job %s in %s: %s", job, candidate.url, exc)
    return stores[0]


def latest_or(snaps, seq: int | None = None) -> CheckpointInfo:
    """Snapshot ``seq``, or the latest complete one; NotFoundError when there is none."""
    if seq is not None:
        return snaps.get(seq)
    latest = snaps.latest()
    if latest is None:
        raise NotFoundError(f"no complete checkpoint snapshot at {snaps.url}")
    return latest


def restore_into(snaps, dest: str | Path, seq: int | None = None, *, progress=None) -> FetchedCheckpoint:
    """Restore snapshot ``seq`` (default: the latest) of ``snaps`` into ``dest``."""
    from runctl.agent.workspace import resume_path

    folder = Path(dest)
    info = snaps.restore(latest_or(snaps, seq), folder, progress=progress)
    return FetchedCheckpoint(folder=folder, newest=resume_path(folder, info), seq=info.seq, snapshot=info)


def fetch_latest(target: str, dest: str | Path, *, store: str | None = None, seq: int | None = None,
                 progress=None) -> FetchedCheckpoint:
    """Download a job's latest complete snapshot (or snapshot ``seq``) into ``dest``, verified.

    ``target`` is a job id (looked up in ``store``, else the default store), a URL naming a
    job, or a folder of snapshot folders. Files already in ``dest`` with the right content
    are not downloaded again, so calling it again to pick up a newer snapshot is cheap.
    """
    return restore_into(open_snapshots(target, store=store), dest, seq, progress=progress)
