"""A clock that tests move by hand (passed where the code takes ``clock=`` and ``sleep=``)."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """Time passes at once: nothing waits for real."""
        self.advance(seconds)
