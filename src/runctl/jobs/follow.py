"""Following a job that runs in its Auto Scaling group, from any machine: its output, its
recoveries, its end. Following never changes the job: stopping it (Ctrl-C, a dead terminal)
leaves the job running on AWS.

``follow_group_job`` polls the store: the attempts' log chunks (each shown once), the
recovery records the agents write (one line each: the notice, the replacement), and
group.json's ``ended`` record, which the agent (or boot watchdog, or ``aws cancel``) writes
after it deleted the group. It returns a ``FollowResult`` once the job ended, or when
``timeout`` passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from runctl.agent import group_record as records
from runctl.agent.logs import LogFollower
from runctl.agent.status import read_status

#: How long the job may go without any agent reporting before the follower says so.
QUIET_NOTE_S = 180.0


@dataclass(frozen=True)
class FollowResult:
    state: str  # completed, failed, stopped, interrupted; timed-out when the follower gave up
    message: str
    recoveries: int
    instance_id: str | None  # the instance of the last attempt


class _Shown:
    """What was shown already, so a line is never shown twice."""

    def __init__(self) -> None:
        self.recoveries = 0
        self.noted_quiet = False


def follow_group_job(store, job_id: str, *, first_attempt: int, sink: BinaryIO, note: Callable[[str], None],
                     timeout: float | None = None, poll: float = 1.0, clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> FollowResult:
    shown = _Shown()
    show_logs = LogFollower(store, job_id, first_attempt, sink)
    started = clock()
    while True:
        settings = records.read_group(store, job_id) or {}  # before the logs: nothing is missed at the end
        show_logs()
        _show_recoveries(store, job_id, note, shown)
        status = read_status(store, job_id)
        ended = settings.get("ended")
        if ended:
            last = status.attempts[-1] if status is not None and status.attempts else None
            return FollowResult(ended["state"], ended.get("message", ""), shown.recoveries,
                                last.instance_id if last is not None else None)
        if not shown.noted_quiet and status is None and clock() - started > QUIET_NOTE_S:
            shown.noted_quiet = True
            note(f"runctl: no agent has started job {job_id} in {QUIET_NOTE_S:.0f}s; the group's boot watchdog "
                 f"ends an instance whose agent never starts (runctl resources list --job {job_id} shows the "
                 "group and its instances)")
        if timeout is not None and clock() - started >= timeout:
            return FollowResult("timed-out", f"stopped following after {timeout:g}s; the job goes on: "
                                             f"runctl aws watch {job_id}", shown.recoveries, None)
        sleep(poll)


def _show_recoveries(store, job_id: str, note: Callable[[str], None], shown: _Shown) -> None:
    found = records.read_recovery_list(store, job_id)
    for record in found[shown.recoveries:]:
        if not record.get("launched"):
            return  # shown once the replacement reported
        requested = record.get("launch_requested")
        lead = (f", replacement requested {requested - record['notice_seen']:.1f}s after the notice"
                if requested and record.get("notice_seen") else "")
        note(f"runctl: {record.get('old_instance')} was reclaimed ({record.get('reason', 'lost')}{lead}); "
             f"job {job_id} resumes on {record['launched']} ({record.get('instance_type') or '?'}, "
             f"{record.get('az') or '?'})")
        shown.recoveries += 1
