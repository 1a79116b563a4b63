"""Which training step a checkpoint file holds, from what the script reported. Pure.

The script reports through its progress file (``runctl.progress`` / ``runctl.save_atomic``,
see ``runctl._script``): ``recent`` lists ``[time, step]`` pairs, when each step was
reported, and ``saves`` lists ``[path, step, time]``, one per ``save_atomic`` call: the path
relative to the checkpoint folder (so that it means the same inside a container), the time
taken once the file was renamed into place. The agent reads the file often and keeps what
it has seen here, so that a snapshot committed later records the step the file was written
at, never the step the script has reached by upload time.

A file version (its path and modification time) holds:
- the step of the earliest ``save_atomic`` of that path (or of a folder holding it)
  finished at or after the file's modification time: exact;
- else the last step reported at or before that time (give or take MTIME_SLACK: file times
  come from a coarse clock that may lag the script's by a clock tick): exact when the script
  reports a step before saving it (the usual loop), a lower bound otherwise;
- else None: nothing tells.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

#: How many reports and saves the agent remembers (a few hours of checkpoints, minutes of steps).
MAX_REPORTS = 8192
MAX_SAVES = 1024
#: A file's modification time may lag ``time.time()`` by a kernel clock tick (1-10 ms).
MTIME_SLACK = 0.01


class StepLog:
    def __init__(self) -> None:
        self._reports: deque[tuple[float, int]] = deque(maxlen=MAX_REPORTS)  # time order
        self._saves: deque[tuple[str, int, float]] = deque(maxlen=MAX_SAVES)  # time order

    def add(self, record: dict) -> None:
        """Merge one progress record (what ``runctl._script`` writes); bad entries are skipped."""
        last = self._reports[-1][0] if self._reports else float("-inf")
        for pair in _pairs(record.get("recent")):
            when, step = pair
            if _number(when) and isinstance(step, int) and when > last:
                self._reports.append((float(when), step))
                last = float(when)
        seen = {(p, t) for p, _s, t in self._saves}
        for entry in _triples(record.get("saves")):
            path, step, when = entry
            if isinstance(path, str) and isinstance(step, int) and _number(when) and (path, when) not in seen:
                self._saves.append((path, step, float(when)))
        if self._saves and any(a[2] > b[2] for a, b in zip(self._saves, list(self._saves)[1:])):
            ordered = sorted(self._saves, key=lambda s: s[2])
            self._saves.clear()
            self._saves.extend(ordered)

    def step_at(self, path: str, mtime: float) -> int | None:
        """The step the file ``path`` (relative to the checkpoint folder, with /) modified at
        ``mtime`` (seconds) holds."""
        for saved, step, when in self._saves:
            if when >= mtime and (path == saved or path.startswith(saved.rstrip("/") + "/")):
                return step
        times = [t for t, _s in self._reports]
        index = bisect_right(times, mtime + MTIME_SLACK)
        return self._reports[index - 1][1] if index else None

    def reported_at(self, step: int) -> float | None:
        """When the script first reported ``step``, if that report is still remembered."""
        return next((when for when, reported in self._reports if reported == step), None)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pairs(value) -> list:
    return [v for v in value if isinstance(v, list) and len(v) == 2] if isinstance(value, list) else []


def _triples(value) -> list:
    return [v for v in value if isinstance(v, list) and len(v) == 3] if isinstance(value, list) else []
