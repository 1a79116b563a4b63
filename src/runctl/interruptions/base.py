from __future__ import annotations

from typing import Protocol

from runctl.models import InterruptionNotice


class InterruptionSource(Protocol):
    def attempt_started(self, attempt: int, now: float) -> None:
        """A new attempt's process has just started."""

    def poll(self, now: float) -> InterruptionNotice | None:
        """A notice not reported before, or None. Must return quickly."""

    def close(self) -> None:
        """Stop watching (restore signal handlers, stop threads)."""
