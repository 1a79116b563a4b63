"""Where interruptions come from: signals to the agent, rehearsals, the EC2 metadata service.

Every source offers ``poll(now) -> InterruptionNotice | None``; the agent polls them all
about every 200 ms and acts on the first notice.
"""

from runctl.interruptions.base import InterruptionSource
from runctl.interruptions.ec2 import Ec2MetadataSource, detect_ec2_spot, running_on_ec2
from runctl.interruptions.rehearsal import RehearsalSchedule, parse_rehearse_at
from runctl.interruptions.signals import SignalSource

__all__ = ["Ec2MetadataSource", "InterruptionSource", "detect_ec2_spot", "running_on_ec2", "sources_for", "RehearsalSchedule", "SignalSource", "parse_rehearse_at"]


def sources_for(rehearse_offsets: list[float], spot_notices: bool | None) -> tuple[list, RehearsalSchedule | None]:
    """The sources an agent watches: its own signals, a rehearsal when asked, and the EC2
    metadata service when asked (``True``) or, by default (``None``), on an EC2 spot instance.

    The signal source is started: from here on a Ctrl-C or SIGTERM becomes a notice (also
    while the agent restores before the first attempt) until the agent closes its sources."""
    signals = SignalSource()
    signals.start()
    sources: list = [signals]
    rehearsal = RehearsalSchedule(list(rehearse_offsets)) if rehearse_offsets else None
    if rehearsal:
        sources.append(rehearsal)
    if spot_notices is None:
        spot_notices = running_on_ec2() and detect_ec2_spot() is True
    if spot_notices:
        sources.append(Ec2MetadataSource())
    return sources, rehearsal
