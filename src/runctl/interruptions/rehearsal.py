"""Preemption rehearsal: interrupt the job on purpose, as a spot reclaim would.

Interruption *k* hits attempt *k* at its offset, measured from that attempt's start; the
attempts after the last scheduled interruption run undisturbed.
"""

from __future__ import annotations

import random
import re

from runctl.errors import UsageError
from runctl.models import InterruptionNotice

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

#: Without --rehearse-at, each interruption comes this many seconds into its attempt.
DEFAULT_WINDOW = (5.0, 15.0)


def parse_duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"invalid duration {text!r}; use a number with s, m or h, e.g. 20s or 1.5m")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_rehearse_at(text: str) -> list[float]:
    """'20s,45s' -> [20.0, 45.0]."""
    return [parse_duration(part) for part in text.split(",") if part.strip()]


def plan_offsets(count: int, at: list[float] | None, rng: random.Random) -> list[float]:
    """The offset into each attempt of each of ``count`` interruptions. Pure."""
    if count < 0:
        raise UsageError("--rehearse takes a count of 0 or more")
    if at:
        if len(at) != count:
            raise UsageError(f"--rehearse-at gives {len(at)} times for --rehearse {count}; give one time per interruption")
        return list(at)
    return [round(rng.uniform(*DEFAULT_WINDOW), 1) for _ in range(count)]


class RehearsalSchedule:
    def __init__(self, offsets: list[float]) -> None:
        self.offsets = offsets
        self.injected = 0
        self._due: float | None = None

    @property
    def planned(self) -> int:
        return len(self.offsets)

    def attempt_started(self, attempt: int, now: float) -> None:
        pending = self.injected < len(self.offsets)
        self._due = now + self.offsets[self.injected] if pending else None

    def poll(self, now: float) -> InterruptionNotice | None:
        if self._due is None or now < self._due:
            return None
        self._due = None
        self.injected += 1
        return InterruptionNotice(
            "rehearsal", "terminate", now,
            detail=f"rehearsal interruption {self.injected} of {len(self.offsets)}",
        )

    def close(self) -> None:
        pass
