"""How long the script may take to stop when the machine has a deadline. Pure.

The grace period after the stop signal is the configured one, but never so long that the
final snapshot cannot reach the store before the notice's deadline: the agent estimates
the upload from the bytes it expects to send and the throughput it measured.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Assumed until a snapshot of at least MIN_SAMPLE_BYTES has been timed.
DEFAULT_THROUGHPUT = 50e6  # bytes/s: a cautious figure for S3 from EC2
MIN_SAMPLE_BYTES = 1 << 20
UPLOAD_OVERHEAD_S = 1.0  # manifest, listing, status write
SAFETY_MARGIN_S = 2.0


def kill_time(now: float, grace: float, deadline: float | None, expected_bytes: int, throughput: float) -> float:
    """The moment to SIGKILL what is left of the process tree."""
    planned = now + grace
    if deadline is None:
        return planned
    upload_s = expected_bytes / max(throughput, 1.0) + UPLOAD_OVERHEAD_S
    return max(now, min(planned, deadline - upload_s - SAFETY_MARGIN_S))


@dataclass
class ThroughputMeter:
    """Upload throughput of recent snapshots, smoothed (EWMA)."""

    estimate: float = DEFAULT_THROUGHPUT
    measured: bool = False
    weight: float = 0.5

    def record(self, uploaded_bytes: int, seconds: float) -> None:
        if uploaded_bytes < MIN_SAMPLE_BYTES or seconds <= 0:
            return  # small snapshots are dominated by fixed costs: they would mislead
        sample = uploaded_bytes / seconds
        self.estimate = sample if not self.measured else self.weight * sample + (1 - self.weight) * self.estimate
        self.measured = True
