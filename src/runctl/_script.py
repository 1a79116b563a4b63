"""The in-script API: what a training script sees of runctl (re-exported by ``runctl``).

Standard library only, so that ``import runctl`` in a training script costs nothing.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runctl.fsutil import fsync_path, temp_name_beside

_DEFAULT_CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir() -> Path:
    """The folder to save checkpoints in; runctl restores it before the script starts.

    Outside runctl, ``./checkpoints``. The folder is created if missing.
    """
    path = Path(
        os.environ.get("RUNCTL_CHECKPOINT_DIR")
        or os.environ.get("TRAINCTL_CHECKPOINT_DIR")
        or _DEFAULT_CHECKPOINT_DIR
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def resume_from() -> Path | None:
    """The newest checkpoint (file or folder) to resume from, or None on a fresh start."""
    value = os.environ.get("RUNCTL_RESUME_FROM")
    return Path(value) if value else None


def interrupted() -> bool:
    """True once an interruption notice has arrived: save now, the process will be stopped."""
    flag = os.environ.get("RUNCTL_INTERRUPT_FILE")
    return bool(flag) and os.path.exists(flag)


def save_atomic(path: str | os.PathLike, writer: Callable[[Path], Any] | bytes | str, *,
                step: int | None = None) -> Path:
    """Write ``path`` so that no reader, and no crash, ever sees it half-written.

    ``writer`` is called with a temporary path in the same folder and must write the
    file (or a folder, as ``save_pretrained`` does) there, e.g.
    ``save_atomic("ckpt.pt", lambda tmp: torch.save(state, tmp))``; bytes or text are
    written as they are. The result is fsynced and renamed into place.

    Under runctl, the snapshot that captures ``path`` records ``step`` as the step it holds
    (default: the last step given to ``progress``), whenever it is uploaded.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name_beside(target)
    try:
        if isinstance(writer, (bytes, str)):
            temp.write_bytes(writer.encode() if isinstance(writer, str) else writer)
        else:
            writer(temp)
        _fsync_tree(temp)
        if temp.is_dir() and target.is_dir():
            # A folder cannot replace a non-empty folder in one rename: move the old one
            # aside first, so that a crash leaves either the old or the new one in place.
            old = temp_name_beside(target)
            os.replace(target, old)
            os.replace(temp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, target)
        fsync_path(target.parent)
    finally:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
    try:
        _note_save(target, step)
    except OSError:  # advisory, as progress is: the checkpoint itself is in place
        pass
    return target


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for name in files:
                fsync_path(Path(root) / name)
            fsync_path(Path(root))
    else:
        fsync_path(path)


class _ProgressWriter:
    """Writes the progress file at most every ``every`` seconds; the newest report is kept and
    written on the next call after that, or when the process exits (atexit), so that a loop
    calling progress() every step pays a time check, not a file write and rename.

    It also remembers the first step this process reported: a resumed attempt starts one past
    its checkpoint, which is how the agent counts the steps an interruption cost.

    And when each step was reported (``recent``, [time, step] pairs, at most one every
    ``spacing`` seconds) and the step of each ``save_atomic`` (``saves``): the agent reads
    them to record the step a checkpoint file holds (``runctl.agent.steps``)."""

    every = 0.1
    spacing = 0.01
    keep_reports = 256
    keep_saves = 32

    def __init__(self) -> None:
        self.first_step: int | None = None
        self.last_step: int | None = None
        self.written_at = float("-inf")
        self.pending: tuple[str, dict] | None = None
        self.latest: tuple[str, dict] | None = None
        self.flush_at_exit = False
        self.recent: deque[list] = deque(maxlen=self.keep_reports)
        self.saves: deque[list] = deque(maxlen=self.keep_saves)

    def report(self, target: str, record: dict) -> None:
        step, when = record.get("step"), record.get("time")
        if isinstance(step, int) and step != self.last_step:
            self.last_step = step
            if not self.recent or when - self.recent[-1][0] >= self.spacing:
                self.recent.append([when, step])
        self.latest = (target, record)
        now = time.monotonic()
        if now - self.written_at >= self.every:
            self.pending = None
            self.written_at = now
            self._write(target, record)
            return
        self.pending = (target, record)
        if not self.flush_at_exit:
            atexit.register(self.flush)
            self.flush_at_exit = True

    def saved(self, target: str, rel: str, step: int) -> None:
        """A checkpoint ``rel`` holding ``step`` is in place: tell the agent now."""
        self.saves.append([rel, step, time.time()])
        self.pending = None
        self.written_at = time.monotonic()
        latest = self.latest[1] if self.latest else {"step": None, "first_step": None, "time": time.time(),
                                                     "metrics": {}}
        self._write(target, latest)

    def flush(self) -> None:
        if self.pending is not None:
            target, record = self.pending
            self.pending = None
            self._write(target, record)

    def _write(self, target: str, record: dict) -> None:
        _write_progress(target, {**record, "recent": list(self.recent), "saves": list(self.saves)})


_progress = _ProgressWriter()


def progress(step: int | None = None, **metrics: float) -> None:
    """Tell runctl how far the script is, so that reports can count the steps lost, and so
    that a snapshot records the step its checkpoint was saved at (call it before saving).

    Cheap enough to call every step (a file is written at most ten times a second, and at
    exit); a no-op outside runctl.
    """
    target = os.environ.get("RUNCTL_PROGRESS_FILE")
    if not target:
        return
    if step is not None and _progress.first_step is None:
        _progress.first_step = step
    record = {"step": step, "first_step": _progress.first_step, "time": time.time(), "metrics": metrics}
    _progress.report(target, record)


def flush_progress() -> None:
    """Write the newest progress report now, not within 0.1 s or at exit: for a caller that
    stops training and may be killed before it exits (the framework callbacks)."""
    _progress.flush()


def _note_save(target: Path, step: int | None) -> None:
    """Record the step ``target`` holds, for the agent; a no-op outside runctl, outside the
    checkpoint folder, or when no step is known."""
    progress_file = os.environ.get("RUNCTL_PROGRESS_FILE")
    folder = os.environ.get("RUNCTL_CHECKPOINT_DIR") or os.environ.get("TRAINCTL_CHECKPOINT_DIR")
    step = _progress.last_step if step is None else step
    if not progress_file or not folder or step is None:
        return
    rel = os.path.relpath(os.path.realpath(target), os.path.realpath(folder))
    if rel == os.curdir or rel.startswith(os.pardir + os.sep) or rel == os.pardir:
        return
    _progress.saved(progress_file, rel.replace(os.sep, "/"), step)


def _write_progress(target: str, record: dict) -> None:
    temp = temp_name_beside(Path(target))
    try:
        temp.write_text(json.dumps(record))
        os.replace(temp, target)
    except OSError:  # progress is advisory: never break the training loop over it
        temp.unlink(missing_ok=True)
