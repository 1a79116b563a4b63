"""The agent of an instance in a job's Auto Scaling group: it runs that one job and ends it
on the cloud side, with no runctl process anywhere else.

``python -m runctl.agent.resident --store URL --job JOB`` (the group's bootstrap) starts it.
The job's group.json (``agent.group_record``) names the group and its rules. The agent:

1. says it started (its heartbeat; the boot failures in a row are cleared once the script
   runs; the bootstrap's fallback shutdown is cancelled);
2. decides from the store whether the job is still to run (``before_run``): a job that
   ended, was cancelled, was reclaimed without auto-resume, or exceeded ``max_restarts``
   machine losses is ended here instead;
3. runs it as the resident agent runs an assignment (lease, restore, attempts, snapshots);
   at a spot notice it detaches its instance from the group without lowering the desired
   capacity, so AWS launches the replacement while the final snapshot is made;
4. when the job ended (completed, failed, cancelled): deletes the group and its launch
   template, records why in group.json, and shuts its machine down. After a notice, its
   machine was detached: it shuts it down once the final snapshot is durable. In a job of
   several machines, the others shut theirs down once the host's agent deleted the group
   (the group would replace a machine that went before).

A SIGTERM that nobody here asked for is the machine going away (AWS terminating it): the
job is interrupted, not stopped, and the group's next instance resumes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from runctl.agent import group_record as records
from runctl.agent.cancellation import cancelled
from runctl.agent.node_follower import LEFT
from runctl.agent.restart_policy import RECOVERED_FROM
from runctl.agent.status import read_status
from runctl.errors import RunctlError, UsageError
from runctl.models import JobStatus

log = logging.getLogger(__name__)

ENDED_STATES = ("completed", "failed", "stopped")
#: How long a group's instance waits for the job's lease held by another live agent of the
#: job: Capacity Rebalancing launches the next instance before it ends the current one.
GROUP_LEASE_WAIT_S = 6 * 3600.0
#: How long a machine of several whose part is over waits for the host to delete the group.
GROUP_END_WAIT_S = 120.0


class GroupControl(Protocol):
    """What an agent does to its job's group (``backends.aws.job_group.JobGroups``; the
    shipped ``runctl.testing.FakeGroups`` in tests)."""

    def detach(self, name: str, instance_id: str) -> bool: ...

    def end(self, record, *, leaving: str | None = None) -> None: ...


@dataclass(frozen=True)
class Action:
    run: bool
    state: str = ""  # the job's final state when not running it
    message: str = ""


def machine_losses(status: JobStatus | None, since: float = 0.0) -> int:
    """Instances lost or reclaimed under the job's attempts started at ``since`` or later."""
    if status is None:
        return 0
    return sum(1 for a in status.attempts if a.started >= since and a.reason in RECOVERED_FROM)


def before_run(status: JobStatus | None, cancel: dict | None, settings: dict) -> Action:
    """Whether a new instance of the group runs the job, or ends it (and why). Pure."""
    if cancel is not None:
        return Action(False, "stopped", f"cancelled ({cancel.get('by', 'runctl aws cancel')})")
    if status is not None and status.state in ENDED_STATES:
        return Action(False, status.state, status.message or f"the job {status.state}")
    last = status.attempts[-1] if status is not None and status.attempts else None
    # In a job of several machines an instance joins while the host's attempt runs (at the
    # start, or as a member's replacement): the attempt goes on, no machine of it was lost.
    joining = int((settings.get("group") or {}).get("size") or 1) > 1 and last is not None and last.reason is None
    reclaimed = last is not None and not joining and \
        (last.reason in RECOVERED_FROM or status.state in ("running", "restarting"))
    if reclaimed and not settings.get("auto_resume", True):
        return Action(False, "interrupted", "its instance was reclaimed and auto-resume is off; resume it with "
                                            f"runctl aws run ... --job-id {status.job_id} --auto-resume")
    since = float(settings.get("submitted") or 0.0)  # an earlier submission's losses do not count
    losses = machine_losses(status, since) + (1 if last is not None and last.reason is None and not joining else 0)
    limit = int(settings.get("max_restarts", 3))
    if losses > limit:
        return Action(False, "failed", f"gave up after {losses} lost or reclaimed instances "
                                       f"(max_restarts {limit}); resume it with runctl aws run ... --job-id "
                                       f"{status.job_id if status else ''}")
    return Action(True)


def is_reclaim(notice: dict) -> bool:
    """A notice that this machine goes (spot), as opposed to a rebalance hint or a user's stop."""
    return notice.get("source") == "spot" and notice.get("action") in ("terminate", "stop", "hibernate")


class GroupMember:
    def __init__(self, resident, job_id: str, groups: Callable[[str], GroupControl], *, machine,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.resident = resident
        self.store = resident.store
        self.job_id = job_id
        self.instance_id = resident.identity.instance_id
        self._groups = groups
        self.machine = machine  # agent.power.Machine
        self._clock = clock
        self._sleep = sleep
        self.detached = threading.Event()
        self._detaching: threading.Thread | None = None
        self.settings: dict = {}
        self._script_ran = False

    def serve(self) -> int:
        """Run the job (or end it), then end this machine. Returns 0 (the agent's exit code)."""
        self.machine.cancel_fallback_shutdown()
        try:
            self._serve()
        except Exception as exc:  # a bug, a store that fails: never a machine left without its agent
            log.exception("job %s: the agent failed", self.job_id)
            try:
                self._after_failure(f"{type(exc).__name__}: {exc}")
            except Exception:
                log.exception("job %s: could not record the failure", self.job_id)
                self.machine.power_off(f"the agent of job {self.job_id} failed")
        return 0

    def _serve(self) -> None:
        from runctl.backends.aws.job_group import GroupRecord

        self.settings = records.read_group(self.store, self.job_id) or {}
        if not self.settings:
            raise UsageError(f"job {self.job_id} has no group.json in {self.store.url}: was it submitted with "
                             "runctl aws run?")
        self.record = GroupRecord.from_dict(self.settings["group"])
        status = read_status(self.store, self.job_id)
        action = before_run(status, cancelled(self.store, self.job_id), self.settings)
        if not action.run:
            log.info("job %s: not running it: %s", self.job_id, action.message)
            if action.state in ENDED_STATES:
                settle_status(self.store, self.job_id, action.state, action.message, clock=self._clock)
            self._end_group(action.state, action.message)
            self.machine.power_off(f"job {self.job_id} ended")
            return
        self._note_replacement(status)
        self.resident.on_event = self._on_event
        self.resident.lease_wait_s = GROUP_LEASE_WAIT_S
        try:
            state = self.resident.run_job(self.job_id)
        except RunctlError as exc:
            log.error("job %s: %s", self.job_id, exc)
            if isinstance(exc, UsageError) and self._failed_by_its_agent():
                # Bad input its agent ended the job on (its message says what to fix): the
                # next instance would stop the same way. Ended here, as a job that failed: no
                # boot failure counted, no machine replaced.
                self._after_run("failed")
                return
            self._after_failure(str(exc))
            return
        self._after_run(state)

    def _failed_by_its_agent(self) -> bool:
        """Whether the job's agent recorded it failed (``before_run`` let it run: it was not)."""
        status = read_status(self.store, self.job_id)
        return status is not None and status.state == "failed"

    # -- during the run ------------------------------------------------------------------
    def _on_event(self, event) -> None:
        if event.kind == "attempt" and not self._script_ran:
            self._script_ran = True
            records.clear_boot_failures(self.store, self.job_id)  # failures "in a row" end here
        if event.kind == "notice" and is_reclaim(event.data.get("notice") or {}):
            if self.settings.get("auto_resume", True) and not self.detached.is_set():
                self.detached.set()
                # Off the supervising thread: the script's grace period runs meanwhile.
                self._detaching = threading.Thread(target=self._detach, args=(event.data["notice"],), daemon=True,
                                                   name="group-detach")
                self._detaching.start()

    def _detach(self, notice: dict) -> None:
        """Leave the group at once: it launches the replacement while we save. The recovery
        is recorded first, so the replacement's agent finds it whatever the timing."""
        try:
            records.add_recovery(self.store, self.job_id, {
                "reason": "spot notice", "old_instance": self.instance_id, "notice_seen": notice.get("received"),
                "deadline": notice.get("deadline"), "launch_requested": None})
        except RunctlError as exc:
            log.warning("could not record the recovery: %s", exc)
        try:
            left = self._groups(self.record.region).detach(self.record.name, self.instance_id)
        except RunctlError as exc:
            log.error("could not leave the group %s at the notice (its replacement comes when this machine "
                      "is gone): %s", self.record.name, exc)
            left = False
        requested = self._clock()
        log.info("left group %s at the notice: replacement %s", self.record.name,
                 "requested" if left else "not requested")
        if left:
            try:
                records.update_recovery(self.store, self.job_id, self.instance_id, launch_requested=requested)
            except RunctlError as exc:
                log.warning("could not record when the replacement was requested: %s", exc)

    def _note_replacement(self, status: JobStatus | None) -> None:
        """Record this instance as the replacement of the job's previous one: completing the
        record its agent wrote at the notice, or a new one for a machine lost without one."""
        found = records.read_recovery_list(self.store, self.job_id)
        last = status.attempts[-1] if status is not None and status.attempts else None
        identity = self.resident.identity
        mine = {"launched": self.instance_id, "az": identity.az, "instance_type": identity.instance_type,
                "agent_started": self._clock()}
        try:
            if found and not found[-1].get("launched") and found[-1].get("old_instance") != self.instance_id:
                records.update_recovery(self.store, self.job_id, found[-1]["old_instance"], **mine)
            elif last is not None and last.instance_id not in (None, self.instance_id) and \
                    last.reason in (None, *RECOVERED_FROM) and not (found and found[-1].get("old_instance") ==
                                                                    last.instance_id):
                records.add_recovery(self.store, self.job_id, {
                    "reason": "spot notice" if last.reason == "interrupted" else "lost without a notice",
                    "old_instance": last.instance_id, **mine})
        except RunctlError as exc:
            log.warning("could not record this replacement: %s", exc)

    # -- the end -----------------------------------------------------------------------
    def _after_run(self, state: str) -> None:
        if self._detaching is not None:
            self._detaching.join(timeout=60.0)  # the replacement requested and recorded before we go
        if state in ENDED_STATES:
            status = read_status(self.store, self.job_id)
            cancel = cancelled(self.store, self.job_id) if state == "stopped" else None
            message = f"cancelled ({cancel.get('by', 'runctl aws cancel')})" if cancel is not None else \
                status.message if status is not None else ""
            self._end_group(state, message)
            self.machine.power_off(f"job {self.job_id} {state}")
        elif state == LEFT:  # a machine of several, not the host: the host's agent ends the job and its group
            if not self.detached.is_set():
                self._wait_for_the_group_to_end()
            self.machine.power_off(f"job {self.job_id}: this machine's part is over")
        elif self.detached.is_set():
            self.machine.power_off(f"job {self.job_id} moved to the group's next instance")
        elif state == "interrupted" and not self.settings.get("auto_resume", True):
            self._end_group("interrupted", "its instance was reclaimed and auto-resume is off")
            self.machine.power_off(f"job {self.job_id} interrupted")
        # else the machine is going away by itself (SIGTERM): the group replaces it

    def _wait_for_the_group_to_end(self) -> None:
        """Until the host's agent deleted the group (``GROUP_END_WAIT_S`` at most): a machine of
        the group that powers off before would be replaced by a new one, for nothing."""
        deadline = self._clock() + GROUP_END_WAIT_S
        while self._clock() < deadline:
            try:
                if (records.read_group(self.store, self.job_id) or {}).get("ended"):
                    return
            except RunctlError as exc:
                log.warning("job %s: cannot read its group record: %s", self.job_id, exc)
            self._sleep(1.0)
        log.warning("job %s: its group was not deleted within %.0fs of the job's end; powering off anyway",
                    self.job_id, GROUP_END_WAIT_S)

    def _after_failure(self, why: str) -> None:
        """The agent could not run the job (a store that fails, a lease another agent holds):
        the group's next instance tries again, up to ``max_boot_failures`` in a row."""
        if self._script_ran:
            self.machine.power_off(f"job {self.job_id} could not go on here: {why}")
            return
        limit = int(self.settings.get("max_boot_failures", 3))
        try:
            count = records.add_boot_failure(self.store, self.job_id, self.instance_id)
        except RunctlError as exc:
            log.error("could not count this failure: %s", exc)
            count = 0
        if count >= limit:
            self._fail_job(f"{count} instances in a row could not start it; the last said: {why}")
        self.machine.power_off(f"job {self.job_id} could not start here: {why}")

    def _fail_job(self, message: str) -> None:
        settle_status(self.store, self.job_id, "failed", message, clock=self._clock)
        self._end_group("failed", message)

    def _end_group(self, state: str, message: str) -> None:
        end_group(self.store, self.job_id, self._groups, state, message, by=self.instance_id,
                  leaving=self.instance_id, clock=self._clock)


def end_group(store, job_id: str, groups: Callable[[str], GroupControl], state: str, message: str, *, by: str,
              leaving: str | None = None, clock: Callable[[], float] = time.time) -> None:
    """Delete the job's group and template and record why. Nothing more can run for the job.
    ``leaving``: the instance calling, which leaves the group first (``JobGroups.end``)."""
    from runctl.backends.aws.job_group import GroupRecord

    settings = records.read_group(store, job_id)
    if settings is None:
        return
    record = GroupRecord.from_dict(settings["group"])
    groups(record.region).end(record, leaving=leaving)
    records.mark_ended(store, job_id, state, message, by=by, clock=clock)
    log.info("job %s %s: deleted its group %s", job_id, state, record.name)


def settle_status(store, job_id: str, state: str, message: str, *, clock: Callable[[], float] = time.time) -> None:
    """status.json says the job's final ``state``, with why (the job may never have started);
    a state already final is kept."""
    import dataclasses
    import json

    from runctl.store import layout

    status = read_status(store, job_id) or JobStatus(job_id, "pending")
    if status.state in ENDED_STATES:
        return
    settled = dataclasses.replace(status, state=state, message=message, heartbeat=clock())
    store.write(layout.status_key(job_id), json.dumps(settled.to_dict(), indent=1, sort_keys=True).encode())
