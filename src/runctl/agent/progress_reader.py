"""The agent's side of the script's progress file: the steps it reported, read as the
attempt runs (see ``runctl.agent.steps`` for which step a checkpoint file holds)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from runctl.agent.steps import StepLog

log = logging.getLogger(__name__)


class ProgressReader:
    """The steps the script reported through ``runctl.progress`` (and ``save_atomic``).
    Read by the housekeeping and the checkpoint sync threads."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.first_step: int | None = None
        self.last_step: int | None = None
        self.first_step_at: float | None = None  # when the script reported its first step (its clock)
        self.steps = StepLog()
        self._lock = threading.Lock()

    def step_at(self, rel: str, mtime: float) -> int | None:
        """The step the checkpoint file ``rel`` modified at ``mtime`` holds (see StepLog)."""
        self.read()
        with self._lock:
            return self.steps.step_at(rel, mtime)

    def read(self) -> None:
        try:
            record = json.loads(self._path.read_bytes())
        except (OSError, ValueError):
            return
        if not isinstance(record, dict):
            return
        with self._lock:
            self.steps.add(record)
        step, first = record.get("step"), record.get("first_step")
        if isinstance(step, int):
            self.last_step = step
            self.first_step = first if isinstance(first, int) else (self.first_step if self.first_step is not None else step)
            with self._lock:  # two threads read: the line is logged once
                if self.first_step_at is None:
                    # When the attempt started (or resumed) training: the recovery timeline's end.
                    self.first_step_at = self.steps.reported_at(self.first_step)
                    if self.first_step_at is not None:
                        log.info("%s: first step %d reported at %.3f", self._path.name, self.first_step,
                                 self.first_step_at)
