"""The recovery controller: keeps a job running on AWS across lost machines.

It runs in the CLI while it waits for a job (``runctl aws train --wait --auto-resume``,
``runctl aws run --auto-resume``) or in ``runctl aws watch JOB``. Every ``poll`` seconds it
reads the job's status.json and the state of the instance the job should run on, and does
what ``policy.recovery_decision`` says:

- Relaunch (a spot notice recorded by the agent, the instance stopping or gone, or its
  heartbeat stale while it does not run): launch the replacement at once, overlapping the
  dying instance (same type and configuration first, then the fallback types and other
  subnets: ``Provisioner``), assign the job to it, and record it in recoveries.json. The
  replacement's agent waits for the lease until the dying agent has made its final snapshot
  durable (or the notice deadline passed), restores it and resumes the script.
- Done: the job ended on the instance; terminate the instances it launched (unless ``keep``).
- GiveUp: more than ``max_restarts`` recoveries, or launches failing ``max_launch_failures``
  times in a row (with exponential backoff between them): status "failed", "gave up after
  N recoveries: ...".

``runctl aws cancel`` (cancel.json) stops it: it terminates every instance it launched.
Clock, sleep, the EC2 adapter and the provisioner are passed in.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from runctl.agent.cancellation import cancelled
from runctl.errors import CloudError, CloudNotFound, PreconditionFailed, RunctlError
from runctl.resume.policy import MACHINE_GONE, Done, GiveUp, Relaunch, Wait, launch_backoff, recovery_decision
from runctl.resume.records import read_recoveries, write_recoveries
from runctl.store import layout

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    state: str  # completed, failed, stopped, cancelled, timed-out
    message: str
    instance_id: str  # the instance the job was on at the end
    recoveries: int
    launched: list[str] = field(default_factory=list)


class RecoveryController:
    def __init__(self, store, job_id: str, instance_id: str, *, ec2, provisioner,
                 launch_spec: Callable[[object], object], max_restarts: int, first_attempt: int = 0,
                 keep: bool = False, poll: float = 0.3, max_launch_failures: int = 5,
                 timeout: float | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, on_poll: Callable[[], None] = lambda: None,
                 on_event: Callable[[str], None] = lambda message: None) -> None:
        self.store = store
        self.job_id = job_id
        self.current = instance_id
        self.ec2 = ec2
        self.provisioner = provisioner
        self._spec_for = launch_spec  # InstanceInfo of the instance to replace -> LaunchSpec
        self.max_restarts = max_restarts
        self.first_attempt = first_attempt
        self.keep = keep
        self.poll = poll
        self.max_launch_failures = max_launch_failures
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._on_poll = on_poll
        self._on_event = on_event
        self._state: str | None = None
        self._spec = None  # the replacement's LaunchSpec, made before it is needed
        self._retiring: dict[str, float] = {}  # replaced instances to terminate, by when at the latest

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> Outcome:
        from runctl.agent.status import read_status

        started = self._clock()
        book, _ = read_recoveries(self.store, self.job_id)
        if book.get("current"):
            self.current = book["current"]
        self._prepare_spec()
        while True:
            self._on_poll()
            if cancelled(self.store, self.job_id):
                return self._finish("cancelled", "cancelled (runctl aws cancel)", terminate_all=True)
            status = read_status(self.store, self.job_id)
            self._retire_due(status)
            state = self._instance_state()
            book, _ = read_recoveries(self.store, self.job_id)
            decision = recovery_decision(status, self.current, state, now=self._clock(),
                                         restarts_so_far=len(book["recoveries"]), max_restarts=self.max_restarts,
                                         first_attempt=self.first_attempt)
            if isinstance(decision, Done):
                return self._finish(decision.state, decision.why)
            if isinstance(decision, GiveUp):
                return self._give_up(status, decision.why)
            if isinstance(decision, Relaunch):
                outcome = self._relaunch(decision.why, status, state)
                if outcome is not None:
                    return outcome
                continue
            assert isinstance(decision, Wait)
            if self.timeout is not None and self._clock() - started >= self.timeout:
                return Outcome("timed-out", f"timed out after {self.timeout:g}s; the job goes on on {self.current}",
                               self.current, len(book["recoveries"]), list(book["instances"]))
            self._sleep(self.poll)

    def _instance_state(self) -> str | None:
        try:
            self._state = self.ec2.describe(self.current).state
        except CloudNotFound:
            self._state = None
        except CloudError as exc:  # a passing error: keep what we knew
            log.warning("cannot describe %s: %s", self.current, exc)
        return self._state

    def _prepare_spec(self) -> None:
        """The replacement's launch spec, made now so the launch needs no more than its call."""
        try:
            info = self.ec2.describe(self.current)
        except CloudError as exc:
            log.warning("cannot describe %s to prepare its replacement: %s", self.current, exc)
            info = None
        self._spec = self._spec_for(info)

    # -- relaunching -------------------------------------------------------------------
    def _relaunch(self, why: str, status, state: str | None) -> Outcome | None:
        """Launch and assign a replacement; None to go on watching, an Outcome to stop."""
        seen = self._clock()
        book, etag = read_recoveries(self.store, self.job_id)
        if book.get("current") not in (None, self.current):
            self.current = book["current"]  # another controller relaunched it already
            self._prepare_spec()
            return None
        notice = (status.notice or {}) if status is not None else {}
        record = {"n": len(book["recoveries"]) + 1, "why": why, "old_instance": self.current, "old_state": state,
                  "notice_seen": seen, "notice_at": notice.get("received"), "notice_deadline": notice.get("deadline"),
                  "launch_requested": None, "launched": None, "errors": []}
        book["recoveries"].append(record)
        book["current"] = self.current
        try:  # claim the relaunch: a second controller of the job sees it and adopts ours
            etag = write_recoveries(self.store, self.job_id, book, etag)
        except PreconditionFailed:
            return None  # someone else wrote meanwhile: look again
        self._on_event(f"{why}: launching a replacement")
        failures = 0
        while True:
            if cancelled(self.store, self.job_id):
                return self._finish("cancelled", "cancelled (runctl aws cancel)", terminate_all=True)
            spec = dataclasses.replace(self._spec, idempotency_key=uuid.uuid4().hex)
            requested = self._clock()
            record["launch_requested"] = record["launch_requested"] or requested
            try:
                info = self.provisioner.create_instance(spec)
                break
            except RunctlError as exc:
                failures += 1
                record["errors"].append({"at": requested, "error": str(exc)})
                self._on_event(f"launch {failures} failed: {exc}")
                if failures >= self.max_launch_failures:
                    etag = self._save(book, etag)
                    return self._give_up(status, f"gave up after {len(book['recoveries']) - 1} recoveries: "
                                                 f"{failures} launches failed, the last: {exc}")
                self._sleep(launch_backoff(failures))
        record.update(launched=info.instance_id, instance_type=info.instance_type, az=info.az,
                      launched_at=self._clock(), skipped=[str(p) for p in getattr(self.provisioner, "skipped", ())])
        book["instances"].append(info.instance_id)
        old, book["current"] = self.current, info.instance_id
        self.current, self._state = info.instance_id, info.state
        self._assign(record)
        etag = self._save(book, etag)
        self._on_event(f"launched {info.instance_id} ({info.instance_type}, {info.az or 'AZ unknown'}) in "
                       f"{record['launched_at'] - record['launch_requested']:.1f}s; job {self.job_id} resumes there")
        if cancelled(self.store, self.job_id):  # cancelled while we launched: leave nothing behind
            return self._finish("cancelled", "cancelled (runctl aws cancel)", terminate_all=True)
        if old in book["instances"] and state not in ("shutting-down", "terminated"):
            # One of ours that is no longer needed: at once when it is lost, but after its
            # final snapshot (or its notice's deadline) when it is only being reclaimed.
            self._retiring[old] = notice.get("deadline") if notice.get("deadline") else self._clock()
        self._spec = self._spec_for(info)
        return None

    def _retire_due(self, status) -> None:
        """Terminate the replaced instances whose attempt has ended or whose time is up."""
        ended = {a.instance_id for a in (status.attempts if status is not None else ()) if a.ended}
        now = self._clock()
        for instance_id, not_after in list(self._retiring.items()):
            if instance_id in ended or now >= not_after:
                del self._retiring[instance_id]
                self._terminate([instance_id])

    def _assign(self, record: dict) -> None:
        from runctl.agent.assignment import assign_job

        try:
            assign_job(self.store, self.current, self.job_id, clock=self._clock)
            record["assigned_at"] = self._clock()
        except RunctlError as exc:
            record["errors"].append({"at": self._clock(), "error": f"assign: {exc}"})
            log.warning("cannot assign job %s to %s: %s", self.job_id, self.current, exc)

    def _save(self, book: dict, etag: str | None) -> str | None:
        try:
            return write_recoveries(self.store, self.job_id, book, etag)
        except PreconditionFailed:
            log.warning("recoveries.json of %s changed under this controller; overwriting", self.job_id)
            _, fresh = read_recoveries(self.store, self.job_id)
            return write_recoveries(self.store, self.job_id, book, fresh)
        except RunctlError as exc:
            log.warning("cannot write recoveries.json: %s", exc)
            return etag

    # -- ending ------------------------------------------------------------------------
    def _give_up(self, status, why: str) -> Outcome:
        if status is not None:
            failed = dataclasses.replace(status, state="failed", message=why)
            try:
                self.store.write(layout.status_key(self.job_id),
                                 json.dumps(failed.to_dict(), indent=1, sort_keys=True).encode())
            except RunctlError as exc:
                log.warning("cannot record the job's failure: %s", exc)
        self._on_event(why)
        return self._finish("failed", why, terminate_all=True)

    def _finish(self, state: str, message: str, *, terminate_all: bool = False) -> Outcome:
        book, _ = read_recoveries(self.store, self.job_id)
        launched = list(book["instances"])
        if terminate_all or not self.keep:
            self._terminate(launched)
        return Outcome(state, message, self.current, len(book["recoveries"]), launched)

    def _terminate(self, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:
            try:
                info = self.ec2.describe(instance_id)
                if info.state not in MACHINE_GONE[:2]:
                    self.ec2.terminate(instance_id)
                    self._on_event(f"terminated {instance_id}")
            except RunctlError as exc:
                log.warning("cannot terminate %s: %s", instance_id, exc)
