"""The resident agent on an instance: waits for jobs in the store and runs them.

``python -m runctl.agent.resident --store URL [--region R] [--instance-id ID] [--spot-notices]``

Started by the user-data bootstrap (``runctl.backends.aws.bootstrap``). It beats every ~5 s
into ``instances/<id>/agent.json`` ({instance_id, version, heartbeat, state, job_id, ...}),
polls ``instances/<id>/assignment.json`` every ~1 s, and for an assigned job:

1. reads its job.json and materializes its code tree into ``<home>/code`` (a cache shared
   by every job on this instance);
2. rewrites the spec for this machine: the code folder as workdir, the checkpoint folder
   (the job's ``checkpoint_dir`` inside the code folder, which the job then has a copy of
   its own of, else one under ``<home>/jobs/<id>/``), ``python`` as this interpreter (the
   one runctl is installed in);
3. runs it with the agent (``runctl.agent.supervisor``): restore, attempts, checkpoints,
   logs and status to the store, the EC2 metadata service watched on spot;
4. marks the assignment done (or failed, with why) and goes back to waiting.

A job whose lease another agent holds (the dying instance of a spot reclaim, still making
its final snapshot durable) is waited for, not refused: see ``_wait_for_lease``. A job
cancelled in the store (``runctl aws cancel``) is not started, and a running one is stopped
(``runctl.agent.cancellation.CancelSource``).

``<home>`` is ``RUNCTL_HOME``, else /var/lib/runctl (root) or ~/.cache/runctl. The instance
id, region, type and AZ come from the metadata service (``AWS_EC2_METADATA_SERVICE_ENDPOINT``
moves it) unless given (``runctl.agent.identity``). SIGTERM or Ctrl-C: a running job is
stopped as the agent stops it (signal, grace, final upload), then the agent exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from runctl.agent.assignment import (
    RUNNABLE,
    Assignment,
    read_assignment,
    read_job_spec,
    with_state,
    write_assignment_if,
)
from runctl.errors import NotFoundError, PreconditionFailed, RunctlError, UsageError
from runctl.interruptions.signals import SignalSource
from runctl.models import InterruptionNotice, JobSpec
from runctl.agent.cancellation import CancelSource, cancelled
from runctl.agent.identity import InstanceIdentity, discover_identity
from runctl.store import layout

log = logging.getLogger(__name__)

HOME_ENV = "RUNCTL_HOME"
SPOT_NOTICES_ENV = "RUNCTL_SPOT_NOTICES"
#: How long an agent waits for a job's lease held by another agent (a dead holder's lease
#: expires within its 60 s TTL; a reclaimed machine's at its notice deadline).
LEASE_WAIT_S = 300.0


def default_home(environ=os.environ) -> Path:
    if environ.get(HOME_ENV):
        return Path(environ[HOME_ENV]).expanduser()
    system = Path("/var/lib/runctl")
    if os.geteuid() == 0:
        return system
    return Path.home() / ".cache" / "runctl"


def local_spec(spec: JobSpec, *, workdir: Path, home: Path, store_url: str, python: str = sys.executable) -> JobSpec:
    """The job's spec for this machine: its code folder, ``python`` as the interpreter runctl
    runs in, and its checkpoint folder: the job's ``checkpoint_dir`` inside the code folder
    when it names one (UsageError when that leads out of it), else one under ``home``. Pure."""
    from runctl.agent.workspace import code_folder_problem

    command = list(spec.command)
    if command and command[0] in ("python", "python3"):
        command[0] = python
    if spec.checkpoint_dir:
        problem = code_folder_problem(spec.checkpoint_dir)
        if problem:
            raise UsageError(f"job {spec.job_id}: its checkpoint folder {spec.checkpoint_dir} {problem}; on an "
                             "instance it is a folder of the job's code folder (runctl aws train --checkpoint-dir)")
        folder = workdir / spec.checkpoint_dir
    else:
        folder = home / "jobs" / spec.job_id / "checkpoints"
    return dataclasses.replace(spec, command=tuple(command), workdir=str(workdir), store_url=store_url,
                               checkpoint_dir=str(folder))


class _ResidentSignals(SignalSource):
    """The job's signal source, which also tells the resident agent to exit afterwards.
    ``machine_goes``: a SIGTERM is this machine going away (the agent of a group's instance:
    nobody else stops it that way), so the job is interrupted and resumed elsewhere."""

    def __init__(self, stop: threading.Event, machine_goes: bool = False) -> None:
        self._resident_stop = stop
        self._machine_goes = machine_goes
        super().__init__()

    def _on_signal(self, signum: int, frame) -> None:
        self._resident_stop.set()
        if signum == signal.SIGTERM and self._machine_goes:
            self._notices.put(InterruptionNotice("shutdown", "terminate", self._clock(),
                                                 detail="the machine is shutting down (SIGTERM)"))
            return
        super()._on_signal(signum, frame)


class ResidentAgent:
    def __init__(self, store, identity: InstanceIdentity, home: Path, *, spot_notices: bool | None = None,
                 heartbeat_interval: float = 5.0, poll_interval: float = 1.0, python: str = sys.executable,
                 idle_timeout: float | None = None, machine=None, membership_ttl: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.identity = identity
        self.home = Path(home)
        self.python = python
        self.heartbeat_interval = heartbeat_interval
        self.poll_interval = poll_interval
        self.membership_ttl = membership_ttl  # a job of several machines' (None: multinode's default)
        self._clock = clock
        self._spot_notices = spot_notices
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._state, self._job_id = "idle", None
        self._started = clock()
        self._write_failed_at = 0.0
        self.jobs_run = 0
        self.idle_timeout = idle_timeout  # seconds without a job before the machine shuts down
        from runctl.agent.power import Machine

        self.machine = machine or Machine(identity.instance_id, identity.confirmed)
        self.on_event: Callable[[object], None] = lambda event: None
        self.machine_signals = False  # see _ResidentSignals
        self.lease_wait_s = LEASE_WAIT_S

    # -- heartbeat --------------------------------------------------------------------
    def _set(self, state: str, job_id: str | None = None) -> None:
        with self._lock:
            self._state, self._job_id = state, job_id
        self.beat()

    def beat(self) -> None:
        from runctl import __version__

        with self._lock:
            record = {"instance_id": self.identity.instance_id, "version": __version__, "heartbeat": self._clock(),
                      "state": self._state, "job_id": self._job_id, "pid": os.getpid(), "host": socket.gethostname(), "python": sys.executable,
                      "started": self._started, "region": self.identity.region,
                      "instance_type": self.identity.instance_type, "az": self.identity.az}
            try:
                self.store.write(layout.instance_agent_key(self.identity.instance_id),
                                 json.dumps(record, indent=1, sort_keys=True).encode())
            except RunctlError as exc:
                if self._clock() - self._write_failed_at > 60:
                    log.warning("cannot write the agent's heartbeat: %s", exc)
                    self._write_failed_at = self._clock()

    def _beat_loop(self, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_interval):
            self.beat()

    # -- the loop ---------------------------------------------------------------------
    def serve(self, job_id: str | None = None, member=None) -> int:
        """Wait for assignments and run them until ``stop`` is set; or, with ``member`` (a
        ``group_member.GroupMember``), run the job of this instance's group. Returns 0."""
        if self._spot_notices is None:
            from runctl.interruptions import detect_ec2_spot, running_on_ec2

            self._spot_notices = running_on_ec2() and detect_ec2_spot() is True
        self.home.mkdir(parents=True, exist_ok=True)
        log.info("resident agent on %s (%s, %s), store %s, home %s, spot notices %s", self.identity.instance_id,
                 self.identity.instance_type or "type unknown", self.identity.az or "AZ unknown", self.store.url,
                 self.home, "on" if self._spot_notices else "off")
        done = threading.Event()
        beats = threading.Thread(target=self._beat_loop, args=(done,), daemon=True, name="resident-heartbeat")
        self._set("running" if member is not None else "idle", job_id)
        beats.start()
        try:
            if member is not None:
                return member.serve()
            self._serve_assignments()
        finally:
            done.set()
            beats.join()
            self._set("stopped")
            log.info("resident agent stopped")
        return 0

    def _serve_assignments(self) -> None:
        idle_since = self._clock()
        while not self.stop.is_set():
            if self.poll_once():
                idle_since = self._clock()
            elif self.idle_timeout is not None and self._clock() - idle_since >= self.idle_timeout:
                self._idle_off(self._clock() - idle_since)
                return
            self.stop.wait(self.poll_interval)

    def _idle_off(self, idle_s: float) -> None:
        log.info("no job for %.0fs (idle timeout %.0fs): shutting this instance down", idle_s, self.idle_timeout)
        self.machine.power_off(f"idle for {idle_s:.0f}s with no job")

    def poll_once(self) -> bool:
        """Run the instance's assignment if there is a runnable one. Returns whether it ran one."""
        try:
            found = read_assignment(self.store, self.identity.instance_id)
        except RunctlError as exc:
            log.warning("cannot read the assignment: %s", exc)
            return False
        if found is None or found[0].state not in RUNNABLE:
            return False
        self.run_assignment(*found)
        return True

    def run_assignment(self, assignment: Assignment, etag: str) -> Assignment | None:
        """Take the assignment, run its job, record the outcome. None if it was taken from us."""
        try:
            etag = write_assignment_if(self.store, self.identity.instance_id,
                                       with_state(assignment, "running", self._clock()), etag)
        except PreconditionFailed:
            return None  # a new assignment came meanwhile: the next poll sees it
        self._set("running", assignment.job_id)
        try:
            job_state = self.run_job(assignment.job_id)
            outcome = with_state(assignment, "done", self._clock(), job_state=job_state)
        except RunctlError as exc:
            log.error("job %s: %s", assignment.job_id, exc)
            outcome = with_state(assignment, "failed", self._clock(), message=str(exc))
        except Exception as exc:  # a bug: keep serving, say what happened
            log.exception("job %s: internal error", assignment.job_id)
            outcome = with_state(assignment, "failed", self._clock(),
                                 message=f"internal error: {type(exc).__name__}: {exc}")
        self.jobs_run += 1
        try:
            write_assignment_if(self.store, self.identity.instance_id, outcome, etag)
        except PreconditionFailed:
            log.info("the assignment changed while job %s ran; leaving the new one", assignment.job_id)
        except RunctlError as exc:
            log.warning("cannot record the outcome of job %s: %s", assignment.job_id, exc)
        self._set("stopping" if self.stop.is_set() else "idle")
        return outcome

    def run_job(self, job_id: str) -> str:
        """Run the job here (waiting for its lease while another agent holds it); its final state."""
        from runctl.agent.status import read_status
        from runctl.codesync import materialize
        from runctl.interruptions import sources_for

        try:
            spec = read_job_spec(self.store, job_id)
        except NotFoundError as exc:
            raise UsageError(f"job {job_id} has no job.json in {self.store.url}") from exc
        previous = read_status(self.store, job_id)
        if previous is not None and previous.state == "completed":
            log.info("job %s already completed; nothing to run", job_id)
            return "completed"
        if cancelled(self.store, job_id):
            log.info("job %s was cancelled; not running it", job_id)
            return "stopped"
        job_home = self.home / "jobs" / job_id
        if spec.code_tree:
            # A checkpoint folder inside the code folder must be this job's alone, so such a
            # job gets a copy of the code of its own, not the one shared by every job of the
            # same code on this instance (where a later job would find this one's folder).
            cache = job_home / "code" if spec.checkpoint_dir else self.home / "code"
            workdir = materialize(self.store, spec.code_tree, cache)
        else:
            workdir = job_home / "work"
            workdir.mkdir(parents=True, exist_ok=True)
        from runctl.agent.job_environment import prepare_job_environment

        # Before the lease: a replacement restores it while the dying instance still saves.
        environment = prepare_job_environment(self.store, spec, workdir=workdir, home=self.home,
                                               run_dir=job_home / "run", python=self.python)
        here = local_spec(spec, workdir=workdir, home=self.home, store_url=self.store.url,
                          python=environment.python(self.python) if environment else self.python)
        if environment is not None:
            here = environment.spec_here(here, os.environ)
        if here.image:  # the job runs in its image: log in to its registry and pull it first
            from runctl.agent.container import pull_job_image

            log.info("job %s: %s; each attempt runs in a container of it", job_id,
                     pull_job_image(here, region=self.identity.region))
        sources, _ = sources_for([], self._spot_notices)
        sources[0].close()  # swap the plain signal source for one that also stops us
        sources[0] = _ResidentSignals(self.stop, machine_goes=self.machine_signals)
        sources[0].start()
        if self.stop.is_set():  # SIGTERM came before the job's handlers were in place
            for source in sources:
                source.close()
            raise UsageError(f"the agent is stopping; job {job_id} was not started")
        sources.append(CancelSource(self.store, job_id))
        node = self._join_nodes(here, sources) if here.nodes > 1 else None
        try:
            if node is not None and not node.is_host:
                from runctl.agent.node_epochs import follow

                outcome = follow(node, here, sources, job_home / "run", on_notice=self._on_member_notice,
                                 clock=self._clock)
                if outcome is not None:  # else it replaced the host that went: it runs the job now
                    return outcome
            return self._run_agent(here, sources, environment, job_home, node)
        finally:
            if node is not None:  # on every way out, so that the others need not wait for its TTL
                node.leave()

    def _run_agent(self, here, sources, environment, job_home: Path, node) -> str:
        """Run the job with the agent once this machine holds its lease; its final state.
        ``node``: this machine's ``multinode.Node`` when it hosts a job of several machines."""
        from runctl.agent.status import read_status
        from runctl.agent.supervisor import Agent, AgentOptions

        job_id = here.job_id
        labels = {**self.identity.attempt_labels(), **({"environment": environment.label} if environment else {})}
        options = AgentOptions(run_dir=job_home / "run", heartbeat_interval=self.heartbeat_interval,
                               attempt_labels=labels, node=node)
        events = logging.getLogger("runctl.agent")

        def on_event(event) -> None:
            events.info("%s", event.message)
            if node is not None and event.kind == "notice":
                from runctl.agent.node_epochs import stop_every_machine

                stop_every_machine(self.store, node, event.data.get("notice") or {})
            self.on_event(event)

        agent = Agent(here, self.store, sources, options, events=on_event)
        try:
            agent.lease = self._wait_for_lease(job_id, options.lease_ttl)
        except RunctlError:
            for source in sources:
                source.close()
            raise
        settled = read_status(self.store, job_id)  # the agent we waited for may have finished it
        if settled is not None and settled.state == "completed" or cancelled(self.store, job_id):
            agent.lease.release()
            for source in sources:
                source.close()
            log.info("job %s: %s while this agent waited for it", job_id,
                     "completed" if settled is not None and settled.state == "completed" else "cancelled")
            return "completed" if settled is not None and settled.state == "completed" else "stopped"
        if environment is not None:
            from runctl.agent.job_environment import hand_log_to_attempt, record_failure

            if environment.failure is not None:
                try:
                    return record_failure(self.store, here, environment, options.run_dir,
                                          self.identity.attempt_labels(), clock=self._clock)
                finally:
                    agent.lease.release()
                    for source in sources:
                        source.close()
            previous = read_status(self.store, job_id)
            hand_log_to_attempt(environment, options.run_dir, len(previous.attempts) if previous else 0)
        log.info("job %s: running %s in %s", job_id, " ".join(here.command), here.workdir)
        status = agent.run()
        log.info("job %s: %s", job_id, status.state)
        if environment is not None:
            environment.finish_upload()
        return status.state

    def _on_member_notice(self, notice: InterruptionNotice) -> None:
        """A member's notice, told as the agent tells one (the group member detaches the machine)."""
        from runctl.agent.supervisor import AgentEvent

        self.on_event(AgentEvent("notice", f"interruption: {notice.detail or notice.source}",
                                 {"notice": notice.to_dict()}))

    def _join_nodes(self, spec, sources):
        """This machine's place in a job of several machines (``runctl.agent.multinode``),
        with the job's stop among its interruption sources."""
        from runctl.agent.multinode import MEMBERSHIP_TTL_S, Node, stop_source

        ttl = self.membership_ttl or MEMBERSHIP_TTL_S
        # Renewed several times within the TTL: a late renewal must not look like a lost machine.
        node = Node(self.store, spec, self.identity.instance_id, self.identity.address, ttl=ttl,
                    heartbeat_interval=min(self.heartbeat_interval, ttl / 6), clock=self._clock)
        try:
            node.join()
        except RunctlError:
            node.leave()
            for source in sources:
                source.close()
            raise
        sources.append(stop_source(node))
        return node

    def _wait_for_lease(self, job_id: str, ttl: float):
        """The job's lease, waited for while another agent holds it: the agent on a reclaimed
        machine releases it once its final snapshot is durable; past the notice deadline
        recorded in status.json its machine is gone, and the lease is taken over."""
        from runctl.agent.lease import Lease
        from runctl.agent.status import read_status

        lease = Lease(self.store, job_id, ttl=ttl, clock=self._clock)

        def deadline_passed(_record) -> bool:
            status = read_status(self.store, job_id)
            notice = (status.notice or {}) if status is not None else {}
            last = status.attempts[-1] if status is not None and status.attempts else None
            return (notice.get("deadline") is not None and self._clock() >= float(notice["deadline"]) + 1.0
                    and last is not None and last.instance_id != self.identity.instance_id)

        def give_up() -> str | None:
            if self.stop.is_set():
                return "the agent is stopping"
            return "the job was cancelled" if cancelled(self.store, job_id) else None

        waited = lease.wait_acquire(self.lease_wait_s, poll=0.5, may_take_over=deadline_passed, give_up=give_up)
        if waited > 0.5:
            log.info("job %s: took its lease after waiting %.1fs for the previous agent", job_id, waited)
        return lease


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runctl.agent.resident", description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, help="the store URL (s3://bucket/prefix or a folder)")
    parser.add_argument("--region", help="AWS region (default: from the metadata service)")
    parser.add_argument("--instance-id", help="this instance's id (default: from the metadata service)")
    parser.add_argument("--spot-notices", action=argparse.BooleanOptionalAction, default=None,
                        help=f"watch the metadata service for spot notices (default: {SPOT_NOTICES_ENV}, "
                             "else on when on EC2 spot)")
    parser.add_argument("--job", help="run this job of an Auto Scaling group (its group.json in the store), "
                                      "then end this instance; without it: serve assignments")
    parser.add_argument("--idle-timeout", type=float, metavar="S",
                        help="shut this instance down after S seconds without a job (assignments only)")
    parser.add_argument("--heartbeat-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    parser.add_argument("--poll-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _env_flag(value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def _group_member(agent: ResidentAgent, job_id: str):
    from runctl.agent.group_member import GroupMember
    from runctl.backends.aws.job_group import JobGroups
    from runctl.backends.aws.session import AwsSession

    agent.machine_signals = True
    return GroupMember(agent, job_id, lambda region: JobGroups.for_session(AwsSession(region)),
                       machine=agent.machine)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    agent: ResidentAgent | None = None
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        from runctl.store import open_store

        identity = discover_identity(args.instance_id, args.region)
        if identity.region:
            os.environ.setdefault("AWS_DEFAULT_REGION", identity.region)
        spot = args.spot_notices if args.spot_notices is not None else _env_flag(os.environ.get(SPOT_NOTICES_ENV))
        from runctl.agent.multinode import MEMBERSHIP_TTL_ENV, membership_ttl

        agent = ResidentAgent(open_store(args.store), identity, default_home(), spot_notices=spot,
                              heartbeat_interval=args.heartbeat_interval, poll_interval=args.poll_interval,
                              idle_timeout=args.idle_timeout,
                              membership_ttl=membership_ttl(os.environ.get(MEMBERSHIP_TTL_ENV)))
        agent.stop = stop
        if args.job:
            return agent.serve(args.job, _group_member(agent, args.job))
        return agent.serve()
    except RunctlError as exc:
        log.error("%s", exc)
        return exc.exit_code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
