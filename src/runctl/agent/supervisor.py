"""The agent: runs a job's attempts beside the training process, wherever it runs.

Per attempt: restore the latest complete snapshot, start the process in its own group
with the job's environment, keep its checkpoints and logs flowing to the store, act on
the first interruption notice (signal, grace, SIGKILL), snapshot once more at the end,
record the attempt, and restart when the policy allows.

The lease fences the agent: snapshots are committed only after proving the lease (see
``runctl.agent.lease``). An agent that lost its lease, or could not renew it until half its
TTL was left, stops its script (SIGTERM, then SIGKILL well before the lease runs out, or at
once when another agent holds it), takes no further snapshot, writes no more status, and
raises LeaseLost: another agent may own the job by then.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from runctl.agent import secrets, workspace
from runctl.agent.deadline import kill_time
from runctl.agent.lease import Lease, must_kill_at, must_stop_at
from runctl.agent.multinode import RoundCommitter
from runctl.agent.logs import LogShipper
from runctl.agent.periodic import Periodic
from runctl.agent.process import ProcessTree, describe_exit, subreaper
from runctl.agent.progress_reader import ProgressReader
from runctl.agent.protection import job_end_warnings
from runctl.agent.restart_policy import classify, decide, stopped_on
from runctl.agent.status import FINAL_STATES, StatusBook, close_lost, read_status
from runctl.agent.sync import CheckpointSync, SyncResult, committed_state, scan_folder
from runctl.agent.torchrun import launch_command
from runctl.errors import LeaseLost, PreconditionFailed, RunctlError, StoreError, UsageError
from runctl.interruptions.base import InterruptionSource
from runctl.models import Attempt, InterruptionNotice, JobSpec, JobStatus
from runctl.store import layout
from runctl.store.fencing import generation_of
from runctl.store.sharded import ShardedRounds
from runctl.store.snapshots import Snapshots

log = logging.getLogger(__name__)

#: The checkpoint folder's hash cache, in the run folder (``runctl.store.hash_file``).
HASH_CACHE_NAME = "checkpoint-hashes.jsonl"


@dataclass(frozen=True)
class AgentEvent:
    kind: str  # job, restore, attempt, snapshot, notice, signal, kill, exit, restart, done, warning
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class AgentOptions:
    run_dir: Path  # local folder for the attempt's log, progress and interrupt files
    sinks: tuple[BinaryIO | None, BinaryIO | None] = (None, None)  # where the script's output goes
    wipe_between_attempts: bool = False  # rehearsal: a new attempt starts on an empty folder
    heartbeat_interval: float = 5.0
    poll_interval: float = 0.1
    quiet_period: float = 1.0
    rebalance_is_interruption: bool = False  # else a rebalance recommendation only snapshots at once
    attempt_labels: dict[str, Any] = field(default_factory=dict)  # Attempt fields set on every attempt (instance_id ...)
    lease_ttl: float = 60.0  # renewed every heartbeat_interval
    node: Any = None  # the host's agent of a job of several machines: its multinode.Node (joined)


class Agent:
    def __init__(self, spec: JobSpec, store, sources: Sequence[InterruptionSource], options: AgentOptions,
                 events: Callable[[AgentEvent], None] = lambda event: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.store = store
        self.sources = list(sources)
        self.options = options
        self._emit_to = events
        self._clock = clock
        if options.heartbeat_interval * 4 > options.lease_ttl:
            # Renewals must come several times within the half TTL after which the agent stops.
            raise UsageError(f"the heartbeat interval ({options.heartbeat_interval:g}s) must be at most a "
                             f"quarter of the lease TTL ({options.lease_ttl:g}s); shorten it")
        self.folder = Path(spec.checkpoint_dir)
        # The hashes of the checkpoint folder's files outlive the agent, beside its other
        # private files: a restarted agent's first commit reads only what changed.
        self.snapshots = Snapshots(store, layout.checkpoints_prefix(spec.job_id),
                                   hash_cache_file=options.run_dir / HASH_CACHE_NAME)
        self.lease = Lease(store, spec.job_id, ttl=options.lease_ttl, clock=clock)
        self.book: StatusBook | None = None
        # Set once the agent stops for its lease: from then on it writes nothing for the job.
        self._fenced_out = threading.Event()
        self._lease_trouble = ""  # why the last renewal failed
        self.started = clock()

    def _emit(self, kind: str, message: str, **data: Any) -> None:
        try:
            self._emit_to(AgentEvent(kind, message, data))
        except Exception:  # a rendering bug must never stop the job
            log.exception("event handler failed")

    # -- the job ---------------------------------------------------------------------
    def run(self) -> JobStatus:
        with subreaper():  # a grandchild that detaches is still ours to find and kill
            return self._run()

    def _run(self) -> JobStatus:
        self.started = self._clock()
        workspace.check_checkpoint_folder(self.spec)  # before anything is written in it
        workspace.ensure_writable(self.folder)
        self.options.run_dir.mkdir(parents=True, exist_ok=True)
        self.lease.acquire()
        # The heartbeat beats for the whole run, restores and final uploads included, so a
        # long transfer is never mistaken for a dead agent.
        heartbeat = Periodic(self.options.heartbeat_interval, self._beat)
        try:
            latest = self.snapshots.latest()
            self.lease.rise_above(generation_of(latest) if latest is not None else 0)
            self._write_spec_once()
            previous = read_status(self.store, self.spec.job_id)
            status = JobStatus(self.spec.job_id, "running", close_lost(previous) if previous else (),
                               command=self.spec.command)
            self.book = StatusBook(self.store, status, self._clock)
            heartbeat.start()
            first_in_run = True
            while True:
                attempt, unsaved = self._run_attempt(first_in_run)
                first_in_run = False
                this_run = [a for a in self.book.status.attempts if a.started >= self.started]
                decision = decide(this_run, max_restarts=self.spec.max_restarts,
                                  max_restarts_on_errors=self.spec.max_restarts_on_errors)
                if decision.restart:
                    self.book.update(state="restarting", message=decision.why)
                    self._emit("restart", f"restarting: {decision.why}", attempt=attempt.number)
                    continue
                if unsaved is not None:
                    # Said once, as the run's error: the job ends, its last checkpoint not durable.
                    message = self._unsaved_message(decision.final_state, unsaved)
                    self.book.update(state=decision.final_state, message=message)
                    raise StoreError(message) from unsaved
                warnings = job_end_warnings(self.spec, self.book.status.attempts, decision.final_state,
                                            since=self.started)
                self.book.update(state=decision.final_state, message=decision.why, warnings=warnings)
                self._emit("done", f"job {self.spec.job_id} {decision.final_state}: {decision.why}",
                           state=decision.final_state)
                for line in warnings:  # last, so that they are the lines a person reads
                    self._emit("warning", line, unprotected=True)
                return self.book.status
        except BaseException as exc:
            self._record_end(exc)
            raise
        finally:
            heartbeat.stop()
            for source in self.sources:
                source.close()
            try:
                self.lease.release()
            except RunctlError as exc:  # it runs out by itself; do not hide why the run ended
                self._emit("warning", f"could not release the job's lease (it expires within "
                           f"{self.lease.ttl:g}s): {exc}")

    def _record_end(self, exc: BaseException) -> None:
        """Best effort, when the run ends on an exception: the job in a final state and its
        attempt closed, so that nobody sees it "running" (the store itself may be failing)."""
        if self.book is None or self.book.status.state in FINAL_STATES or self._fenced_out.is_set():
            return  # fenced out: status.json is the new holder's now
        state = "stopped" if isinstance(exc, KeyboardInterrupt) else "failed"
        message, reason = stopped_on(exc)  # bad input (UsageError): what to fix, not "run it again"
        try:
            self.book.update(state=state, message=message)
            if self.book.status.attempts and self.book.status.attempts[-1].ended is None:
                self.book.update_attempt(ended=self._clock(), reason=reason)  # "lost" as a later run would close it
        except Exception as error:  # whatever the store raises now, the error that ended the run is the one to see
            log.warning("could not record the job's end in status.json: %s", error)

    def _unsaved_message(self, state: str, error: StoreError) -> str:
        """The run's last word when its final snapshot failed: what, where the checkpoint is, what next."""
        try:
            latest = self.snapshots.latest()
        except RunctlError:
            latest = None  # the store is failing: say what we can
        where = f"snapshot {latest.seq}" if latest else "the latest complete snapshot"
        return (f"job {self.spec.job_id} {state}: {error}; its newest checkpoint is only in {self.folder}. "
                f"Run the same command again to resume from {where} in the store")

    def _write_spec_once(self) -> None:
        data = json.dumps(self.spec.to_dict(), indent=1, sort_keys=True).encode()
        try:
            self.store.write(layout.job_key(self.spec.job_id), data, if_none_match=True)
        except PreconditionFailed:
            pass  # written by the job's first run; the spec of record stays as it was

    # -- one attempt -------------------------------------------------------------------
    def _prepare_folder(self, first_in_run: bool):
        """Make the checkpoint folder hold the latest complete snapshot; return it.

        Only the job's own files are touched: a folder holding anything else is refused
        (UsageError) before anything is moved. The job's files the store never got (its
        agent died before the final upload) are set aside, not restored over.
        """
        if self.options.wipe_between_attempts and not first_in_run:
            workspace.clear_job_files(self.folder, self.spec.job_id)
        latest = self.snapshots.latest()
        strays = workspace.claim_folder(self.folder, self.spec.job_id, latest)
        if strays:
            aside = self.options.run_dir / "displaced" / workspace.timestamp()
            moved = workspace.set_aside(self.folder, strays, aside)
            what = "not in the store's latest snapshot" if latest else "from before the job's fresh start"
            self._emit("warning", f"moved {len(moved)} of the job's local file(s) {what} to {aside}")
        if latest is None:
            return None
        started = self._clock()
        self.snapshots.restore(latest, self.folder)
        self._emit("restore", f"restored snapshot {latest.seq} ({latest.total_bytes} bytes) "
                   f"in {self._clock() - started:.2f}s", seq=latest.seq)
        return latest

    def _run_attempt(self, first_in_run: bool) -> tuple[Attempt, StoreError | None]:
        """Run one attempt; return it, and the error of its final snapshot when that failed."""
        assert self.book is not None
        number = len(self.book.status.attempts)
        secret_values = self._read_secrets()  # before the restore: a secret that cannot be read costs no download
        restored = self._prepare_folder(first_in_run)
        self._prove_lease(number)
        # Before the script starts: a file it writes at once must not pass for one restored.
        committed = committed_state(restored, scan_folder(self.folder))
        resume = workspace.resume_path(self.folder, restored)
        run_dir = self.options.run_dir
        interrupt_file, progress_file = run_dir / f"interrupt-{number}.json", run_dir / f"progress-{number}.json"
        for stale in (interrupt_file, progress_file):
            stale.unlink(missing_ok=True)
        env = workspace.attempt_environment(os.environ, self.spec, attempt=number, resume=resume,
                                            interrupt_file=interrupt_file, progress_file=progress_file)
        env.update(secret_values)
        argv = workspace.command_for(self.spec, resume)
        # Under torchrun when the job asks for several processes; torch is looked for on the
        # host only (in a container the image's interpreter runs it).
        node = self.options.node
        argv = node.launch(argv) if node is not None else launch_command(
            argv, self.spec.nproc_per_node, grace_period=self.spec.grace_period, stop_signal=self.spec.stop_signal,
            check=not self.spec.image)
        container = None
        if self.spec.image:  # the attempt runs in the job's image, supervised the same way
            from runctl.agent.container import ContainerAttempt

            container = ContainerAttempt(self.spec, run_dir, number)
            argv, env = container.wrap(argv, env)
        log_path = run_dir / f"attempt-{number}.log"
        with open(log_path, "ab") as log_file:
            tree = ProcessTree(argv, env, self.spec.workdir, self.options.sinks, log_file)
            tree.start()
            now = self._clock()
            self.book.add_attempt(Attempt(number, now, resumed_from=restored.seq if restored else None,
                                          host=socket.gethostname(), pid=tree.pid, **self.options.attempt_labels))
            self.book.update(state="running", message="")
            where = f"snapshot {restored.seq} ({resume.name if resume else 'no checkpoint file'})" if restored else "a fresh start"
            self._emit("attempt", f"attempt {number} started from {where}", attempt=number,
                       resumed_from=restored.seq if restored else None)
            for source in self.sources:
                source.attempt_started(number, now)
            shipper = LogShipper(self.store, self.spec.job_id, number, log_path)
            progress = ProgressReader(progress_file)
            rounds = ShardedRounds(self.snapshots) if node is not None else None
            committer = RoundCommitter(rounds, node, clock=self._clock) if rounds is not None else None
            sync = CheckpointSync(
                self.snapshots, self.folder, sync_interval=self.spec.sync_interval,
                max_upload_share=self.spec.max_upload_share,
                keep_last_n=self.spec.keep_last_n, writers=tree.files_open_for_writing,
                metadata=lambda: {"attempt": number},
                on_snapshot=self._on_snapshot, on_error=self._on_sync_error,
                quiet_period=self.options.quiet_period, committed=committed, clock=self._clock,
                fence=self.lease.fence,
                # The step each checkpoint was saved at, as the script reported it then.
                step_of=progress.step_at, observe=progress.read,
                restored_step=restored.metadata.get("step") if restored else None,
                commit=committer,
                prune=rounds.prune if rounds is not None else None,
            )
            sync.start()
            housekeeping = Periodic(self.options.heartbeat_interval, lambda: self._housekeep(shipper, progress))
            housekeeping.start()
            try:
                notice, exit_code = self._supervise(tree, progress, interrupt_file, sync)
                # The moment its processes stopped (the attempt's end comes after its final snapshot).
                log.info("attempt %d: its process tree exited (%s)", number, describe_exit(exit_code))
            finally:
                housekeeping.stop()
                leftovers = tree.kill_all()
                if leftovers:
                    self._emit("kill", f"killed {leftovers} leftover process(es) of the attempt")
                tree.wait()  # after kill_all: a leftover holding the output pipes would stall the pumps
                if container is not None:
                    container.cleanup()  # a killed docker client leaves its container running
            progress.read()  # the last step the script reported goes into the final snapshot
            final, unsaved = None, None
            if not self._fenced_out.is_set():  # a stale holder must not write: its commit would be refused anyway
                try:
                    if committer is not None:
                        committer.final_by(notice.deadline if notice else None)
                    final = sync.final(deadline=notice.deadline if notice else None)
                except LeaseLost:
                    self._fenced_out.set()
                except StoreError as exc:
                    unsaved = exc
            try:
                shipper.ship()
            except RunctlError as exc:  # the log's tail is lost, the attempt's outcome must not be
                self._emit("warning", f"could not upload the end of the attempt's log: {exc}")
        if self._fenced_out.is_set() or self.lease.lost:
            sync.stop()
            raise self._fenced_out_error(number, sync)
        reason = classify(exit_code, notice.to_dict() if notice else None, final_saved=unsaved is None)
        # The snapshot holding the attempt's final state; none when that state never reached the store.
        if unsaved is not None:
            final_seq = None
        elif final is not None:
            final_seq = final.snapshot.seq
        else:  # nothing changed since the last snapshot (or since the restore)
            final_seq = sync.latest.seq if sync.latest else None
        attempt = self.book.update_attempt(
            ended=self._clock(), exit_code=exit_code, reason=reason, final_snapshot=final_seq,
            interruption=notice.to_dict() if notice else None,
            first_step=progress.first_step, last_step=progress.last_step,
        )
        outcome = (f"; its final snapshot did not reach the store ({unsaved})" if unsaved
                   else f"; final snapshot {final_seq}" if final_seq is not None else "")
        self._emit("exit", f"attempt {number} {reason} ({describe_exit(exit_code)}){outcome}",
                   attempt=number, reason=reason, exit_code=exit_code)
        return attempt, unsaved

    def _read_secrets(self) -> dict[str, str]:
        """The values of the job's secret references, read with this agent's credentials, for
        the script's environment only. One that cannot be read ends the job as failed, with
        the error's line (it names the variable and its reference, never a value)."""
        try:
            return secrets.resolve(self.spec.secrets)
        except RunctlError as exc:
            assert self.book is not None
            self.book.update(state="failed", message=str(exc))
            raise

    def _prove_lease(self, attempt: int) -> None:
        """Renew the lease before starting a script: another agent may have taken the job
        while this one restored or restarted. A store that does not answer is no proof of a
        loss: the supervise loop watches the lease from there."""
        try:
            self.lease.renew()
        except LeaseLost as exc:
            self._fenced_out.set()
            raise LeaseLost(f"{exc}; did not start attempt {attempt}",
                            hint="the other agent runs the job now") from exc
        except RunctlError as exc:
            self._lease_trouble = str(exc)

    def _supervise(self, tree: ProcessTree, progress: ProgressReader, interrupt_file: Path, sync: CheckpointSync):
        """Watch the process and the interruption sources until the process exits."""
        notice: InterruptionNotice | None = None
        kill_at: float | None = None
        estimated = 0.0  # when the kill time was last estimated
        lease_stop = False  # stopping the script because the lease cannot be held
        stop_signal = signal.Signals[self.spec.stop_signal]
        while (code := tree.poll()) is None:
            now = self._clock()
            for source in self.sources:
                incoming = source.poll(now)
                if incoming is None:
                    continue
                if incoming.action == "kill" or notice is not None and not incoming.restartable:
                    kill_at = now  # Ctrl-C twice, or a user stop during a grace period: now
                    notice = notice or incoming
                    continue
                if notice is not None:
                    continue  # already stopping; the first notice stands
                if incoming.action == "rebalance" and not self.options.rebalance_is_interruption:
                    sync.snapshot_soon()
                    self._record_notice(incoming)
                    self._emit("notice", f"{incoming.detail}: snapshotting now", notice=incoming.to_dict())
                    continue
                notice = incoming
                _write_json(interrupt_file, incoming.to_dict())
                # The signal first: the store calls below may be slow, or fail.
                tree.signal(stop_signal)
                kill_at = kill_time(now, self.spec.grace_period, incoming.deadline,
                                    sync.expected_final_bytes(), sync.throughput.estimate)
                estimated = now
                self._record_notice(incoming)
                deadline = (f", deadline in {incoming.deadline - now:.0f}s"
                            if incoming.deadline is not None else "")
                self._emit("notice", f"interruption: {incoming.detail or incoming.source}{deadline}; sent "
                           f"{stop_signal.name}, grace {kill_at - now:.0f}s", notice=incoming.to_dict())
            if kill_at is not None and notice is not None and notice.deadline is not None and now - estimated >= 1.0:
                # What the script saves now grows the final upload: keep the kill time honest.
                kill_at = min(kill_at, kill_time(now, self.spec.grace_period, notice.deadline,
                                                 sync.expected_final_bytes(), sync.throughput.estimate))
                estimated = now
            if not lease_stop and (self._fenced_out.is_set() or self.lease.lost
                                   or now >= must_stop_at(self.lease.held_until, self.lease.ttl)):
                lease_stop = True
                self._fenced_out.set()
                sync.halt()
                tree.signal(stop_signal)
                # The grace ends well before the lease runs out, also when a notice's grace runs;
                # at once when another agent holds it (its script may be running already).
                last = now if self.lease.lost else must_kill_at(self.lease.held_until, self.lease.ttl)
                kill_at = min(t for t in (kill_at, now + self.spec.grace_period, last) if t is not None)
                self._emit("warning", f"{self._lease_problem()}: sent {stop_signal.name} to the script, "
                           f"grace {max(0.0, kill_at - now):.0f}s; no more snapshots")
            if kill_at is not None and now >= kill_at:
                self._emit("kill", "grace period over: killing the process tree")
                tree.kill_all()
                kill_at = None
            tree.wait_briefly(self.options.poll_interval)  # returns at once when it exits
        node = self.options.node
        if code != 0 and notice is None and node is not None:
            # A machine lost without a notice fails this torchrun first; the stop comes after.
            notice = node.await_stop(self.sources)
            if notice is not None:
                self._record_notice(notice)
                self._emit("notice", f"interruption after the script failed: {notice.detail}", notice=notice.to_dict())
        return notice, code

    def _beat(self) -> None:
        assert self.book is not None
        try:
            self.lease.renew()
        except LeaseLost as exc:
            self._lease_trouble = str(exc)
            self._fenced_out.set()  # status.json may be the new holder's now: leave it alone
        except RunctlError as exc:
            self._lease_trouble = str(exc)
            log.warning("could not renew the lease (held for %.0fs more): %s",
                        self.lease.held_until - self._clock(), exc)
        if self._fenced_out.is_set():
            return
        try:
            self.book.heartbeat()
        except RunctlError as exc:
            log.warning("could not write the heartbeat: %s", exc)

    def _lease_problem(self) -> str:
        if self.lease.lost:
            return self._lease_trouble or f"job {self.spec.job_id}: this agent lost its lease"
        left = self.lease.held_until - self._clock()
        if left <= 0:  # no renewal even failed in time: the agent itself was stalled
            return (f"job {self.spec.job_id}: its lease ran out {-left:.0f}s ago without being renewed "
                    f"({self._lease_trouble or 'this agent was stalled'})")
        return (f"job {self.spec.job_id}: could not renew its lease, which runs out in {left:.0f}s "
                f"({self._lease_trouble or 'the store did not answer'})")

    def _fenced_out_error(self, attempt: int, sync: CheckpointSync) -> LeaseLost:
        latest = sync.latest.seq if sync.latest is not None else None
        durable = f"snapshot {latest}" if latest is not None else "no snapshot of this attempt"
        self._emit("exit", f"attempt {attempt} stopped: this agent cannot hold the job's lease",
                   attempt=attempt, reason="lease-lost")
        return LeaseLost(f"{self._lease_problem()}; stopped the script of attempt {attempt} and took no "
                         f"snapshot after that (the last durable one from this agent: {durable})",
                         hint="another agent may run the job now; if none does, run it again to resume")

    def _housekeep(self, shipper: LogShipper, progress: ProgressReader) -> None:
        assert self.book is not None
        if self._fenced_out.is_set():
            return
        try:
            shipper.ship()
            progress.read()
            self.book.update_attempt(first_step=progress.first_step, last_step=progress.last_step)
            troubles = [h.describe() for h in (getattr(s, "health", None) for s in self.sources)
                        if h is not None and not h.reachable]
            if troubles or self.book.status.message:
                self.book.update(message="; ".join(troubles))
        except RunctlError as exc:
            log.warning("could not update the store: %s", exc)

    def _record_notice(self, notice: InterruptionNotice) -> None:
        """Put the notice in status.json. A store error must not stop the job: the notice stays
        in the in-memory status, saved with the next update that succeeds."""
        assert self.book is not None
        try:
            self.book.update(notice=notice.to_dict())
        except RunctlError as exc:
            self._emit("warning", f"could not record the notice in status.json (saved later): {exc}")

    def _on_snapshot(self, result: SyncResult) -> None:
        info = result.snapshot
        self._emit("snapshot", f"snapshot {info.seq} durable ({len(info.files)} files, {info.total_bytes} bytes, "
                   f"{result.seconds:.2f}s)", seq=info.seq)

    def _on_sync_error(self, exc: Exception) -> None:
        if isinstance(exc, LeaseLost):
            self._lease_trouble = str(exc)
            self._emit("warning", f"checkpoint snapshot refused: {exc}")
            return
        self._emit("warning", f"checkpoint snapshot failed, will retry: {exc}")


def _write_json(path: Path, data: dict) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(data))
    os.replace(temp, path)
