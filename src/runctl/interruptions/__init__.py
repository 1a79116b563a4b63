"""Where interruptions come from: signals to the agent, rehearsals, the EC2 metadata service.

Every source offers ``poll(now) -> InterruptionNotice | None``; the agent polls them all
about every 200 ms and acts on the first notice.
"""

from runctl.interruptions.base import InterruptionSource
from runctl.interruptions.rehearsal import RehearsalSchedule, parse_rehearse_at
from runctl.interruptions.signals import SignalSource

__all__ = ["InterruptionSource", "RehearsalSchedule", "SignalSource", "parse_rehearse_at"]
