"""The agent of a machine that is not the rendezvous host in a job of several machines.

It holds its membership only (``runctl.agent.multinode.Node``): no lease, no status.json.
It restores the job's latest complete snapshot (every rank's files) into its checkpoint
folder, starts its torchrun once every machine is live, and posts its part (its folder's
files) to every round the host opens, while the script runs and after it exited, until the
host records the job's end. A part is held back a moment (``CATCH_UP_S`` at most) while the
host's part has a checkpoint this machine has not renamed into place yet. Then its agent leaves the membership; its machine powers off.

The interruption sources are watched as the one-machine agent watches them: a notice sends
the stop signal to the tree and SIGKILL after the grace period. A spot notice on this machine
also asks every machine of the job to stop (``runctl.interruptions.job_stop.request_stop``,
this epoch, the notice's deadline) and is handed to ``on_notice`` (the group member detaches
the machine, so the group launches its replacement). After it, this machine posts its final
part to the host's rounds until the host records the attempt's end (its final round
committed) or the notice's deadline passes, and leaves: the next epoch runs without it.
At a stop another machine asked for (``job-stop``), it posts its final part the same way and
returns ``REJOIN`` unless the job ended: its agent joins the next epoch
(``runctl.agent.node_epochs``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from runctl.agent import workspace
from runctl.agent.logs import LogShipper
from runctl.agent.multinode import ENDED, Node
from runctl.agent.periodic import Periodic
from runctl.agent.process import ProcessTree, describe_exit, subreaper
from runctl.agent.status import FINAL_STATES, read_status
from runctl.agent.sync import scan_folder
from runctl.errors import PreconditionFailed, RunctlError
from runctl.interruptions.base import InterruptionSource
from runctl.interruptions.job_stop import request_stop
from runctl.models import Attempt, InterruptionNotice, JobStatus
from runctl.store import layout
from runctl.store.rounds import OPEN, Part
from runctl.store.sharded import ShardedRounds
from runctl.store.snapshots import Snapshots

log = logging.getLogger(__name__)

#: What ``run_job`` returns for a machine that held membership only: the host records the job.
LEFT = "left"
#: What ``NodeFollower.run`` returns when every machine was stopped and this one goes on: its
#: agent joins the next epoch (``Node.rejoin``), as a member or as the host that replaces one.
REJOIN = "rejoin"
#: How long a member whose script ended waits for the host to record the job's end.
END_WAIT_S = 900.0
#: How long a member holds its part back for the checkpoint another machine's part has and its
#: own folder not yet: the machines rename it after the same barrier, a moment apart at most.
CATCH_UP_S = 10.0
#: How often a member ships its torchrun's new output to the store.
LOG_SHIP_S = 5.0
#: How often a member waiting for the host looks whether the host's membership is still live.
HOST_CHECK_S = 2.0


def behind(posted: Sequence[Part], mine: set[str]) -> str | None:
    """The newest top-level entry (checkpoint) of the parts ``posted`` by the other machines
    when this machine's folder (its top-level entries ``mine``) lacks it, else None. Pure."""
    newest: dict[str, int] = {}
    for part in posted:
        for top, mtime in (part.newest or {}).items():
            newest[top] = max(mtime, newest.get(top, mtime))
    if not newest:
        return None
    latest = max(newest, key=lambda top: (newest[top], top))
    return None if latest in mine else latest


def attempt_ended(attempts: Sequence[Attempt], number: int | None) -> bool:
    """Whether the host recorded the end of its attempt ``number`` (None: the one last in
    ``attempts``), or started a later one. Pure."""
    if not attempts:
        return False
    last = attempts[-1]
    if number is None:
        return last.reason is not None
    return last.number > number or any(a.number == number and a.reason is not None for a in attempts)


class NodeFollower:
    def __init__(self, node: Node, spec, sources: Sequence[InterruptionSource], run_dir: Path, *,
                 poll: float = 0.2, end_wait: float = END_WAIT_S,
                 on_notice: Callable[[InterruptionNotice], None] = lambda notice: None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.node = node
        self.spec = spec
        self.store = node.store
        self.sources = list(sources)
        self.run_dir = Path(run_dir)
        self.folder = Path(spec.checkpoint_dir)
        self.snapshots = Snapshots(self.store, layout.checkpoints_prefix(spec.job_id),
                                   hash_cache_file=self.run_dir / "checkpoint-hashes.jsonl")
        self.rounds = ShardedRounds(self.snapshots)
        self._poll = poll
        self._end_wait = end_wait
        self._on_notice = on_notice
        self._reclaim: InterruptionNotice | None = None  # the spot notice of this machine, once it came
        self._stopped: InterruptionNotice | None = None  # the stop of every machine, when another asked
        self._attempt: int | None = None  # the host's attempt running at the notice, when status.json said
        self._clock = clock
        self._sleep = sleep
        self._posted: set[int] = set()
        self._host_lost = False  # the host's membership expired while this machine waited for it
        self._next_host_check = 0.0
        self._first_seen: dict[int, float] = {}  # round seq -> when this machine first saw it open

    def run(self) -> str:
        """Run this machine's part of the job; ``LEFT`` once the host recorded its end (or
        after ``end_wait``), ``REJOIN`` after a stop of every machine or once the host was
        lost. A torchrun that failed is a stop when one comes within the membership TTL (a
        machine was lost: ``Node.await_stop``). RunctlError when it could not start. The
        caller leaves the membership."""
        with subreaper():
            code = self._run_script()
            log.info("job %s: this machine's torchrun ended (%s)", self.spec.job_id, describe_exit(code))
            if code != 0 and self._reclaim is None and self._stopped is None:
                # Its collectives fail first when a machine is lost: the stop comes after.
                self._stopped = self.node.await_stop(self.sources)
                if self._stopped is not None:
                    log.info("job %s: %s", self.spec.job_id, self._stopped.detail)
                    self._attempt = self._running_attempt()
            if self._reclaim is not None:
                self._post_final_part(self._reclaim)
            elif self._stopped is not None:
                status = self._post_final_part(self._stopped)
                if status is None or status.state not in ENDED:
                    return REJOIN
            else:
                self._post_until_the_end()
            if self._host_lost and self._reclaim is None:  # a survivor (maybe this one) replaces it
                return REJOIN
        return LEFT

    def _run_script(self) -> int:
        workspace.ensure_writable(self.folder)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Every machine first: a replacement must restore the snapshot the host's final round of
        # the epoch before makes, and the host joins this epoch only once that round is over.
        self.node.wait_for_all()
        latest = self.snapshots.latest()
        # What this folder holds beyond the latest complete snapshot (saved before a lost peer
        # reached it) goes aside, as the host's does: no stale checkpoint in a later part.
        strays = workspace.claim_folder(self.folder, self.spec.job_id, latest)
        if strays:
            aside = self.run_dir / "displaced" / workspace.timestamp()
            workspace.set_aside(self.folder, strays, aside)
            log.warning("job %s: moved %d local file(s) not in the latest snapshot to %s", self.spec.job_id,
                        len(strays), aside)
        if latest is not None:
            self.snapshots.restore(latest, self.folder)
            log.info("job %s: restored snapshot %d", self.spec.job_id, latest.seq)
        resume = workspace.resume_path(self.folder, latest)
        status = read_status(self.store, self.spec.job_id)
        number = len(status.attempts) if status is not None else 0  # the host's count: the attempt it adds
        interrupt_file = self.run_dir / f"interrupt-{number}.json"
        progress_file = self.run_dir / f"progress-{number}.json"
        # An epoch before may have used the same number (read before or after the host added its
        # attempt): its interrupt file would stop this script at its first step.
        for stale in (interrupt_file, progress_file):
            stale.unlink(missing_ok=True)
        env = workspace.attempt_environment(os.environ, self.spec, attempt=number, resume=resume,
                                            interrupt_file=interrupt_file, progress_file=progress_file)
        argv = self.node.launch(workspace.command_for(self.spec, resume))
        log_path = self.run_dir / f"attempt-{number}.log"
        # Apart from the host's (the job's), read with runctl logs JOB --node INSTANCE.
        shipper = LogShipper(self.store, self.spec.job_id, number, log_path, node=self.node.instance_id)
        shipper.skip_shipped()
        shipping = Periodic(LOG_SHIP_S, lambda: self._ship(shipper))
        with open(log_path, "ab") as log_file:
            tree = ProcessTree(argv, env, self.spec.workdir, (None, None), log_file)
            tree.start()
            log.info("job %s: this machine's torchrun started (epoch %d)", self.spec.job_id, self.node.epoch)
            shipping.start()
            for source in self.sources:
                source.attempt_started(number, self._clock())
            try:
                return self._supervise(tree, interrupt_file)
            finally:
                tree.kill_all()
                tree.wait()
                shipping.stop()
                self._ship(shipper)

    def _ship(self, shipper: LogShipper) -> None:
        try:
            shipper.ship()
        except RunctlError as exc:  # what was not shipped goes with the next chunk
            log.warning("job %s: could not ship this machine's output: %s", self.spec.job_id, exc)

    def _supervise(self, tree: ProcessTree, interrupt_file: Path) -> int:
        kill_at = None
        stop_signal = signal.Signals[self.spec.stop_signal]
        while (code := tree.poll()) is None:
            now = self._clock()
            for source in self.sources:
                notice = source.poll(now)
                if notice is not None and kill_at is None:
                    interrupt_file.write_text(json.dumps(notice.to_dict()))
                    tree.signal(stop_signal)
                    kill_at = now + self.spec.grace_period
                    log.info("job %s: %s; sent %s", self.spec.job_id, notice.detail or notice.source, stop_signal.name)
                    if notice.source == "spot":
                        self._stop_every_machine(notice)
                    elif notice.source == "job-stop":
                        self._stopped = notice
                        self._attempt = self._running_attempt()
            if kill_at is not None and now >= kill_at:
                tree.kill_all()
            self._post_open_round()
            tree.wait_briefly(self._poll)
        return code

    def _stop_every_machine(self, notice: InterruptionNotice) -> None:
        """This machine goes: ask the others to stop this epoch (their collectives would wait
        for it until they time out), and have the group launch its replacement."""
        self._reclaim = notice
        self.node.going = True
        self._attempt = self._running_attempt()
        try:
            request_stop(self.store, self.spec.job_id, self.node.epoch,
                         f"spot notice on {self.node.instance_id}", notice.deadline, requested=notice.received)
        except RunctlError as exc:  # the others' torchruns stop by themselves once this one is gone
            log.error("job %s: could not ask the other machines to stop: %s", self.spec.job_id, exc)
        self._on_notice(notice)

    def _running_attempt(self) -> int | None:
        """The host's attempt running now (its torchrun met ours), read at a stop: recorded
        ended, or a later one started, by the time this machine looks again."""
        try:
            status = read_status(self.store, self.spec.job_id)
        except RunctlError as exc:
            log.warning("job %s: cannot read its status: %s", self.spec.job_id, exc)
            return None
        return status.attempts[-1].number if status is not None and status.attempts else None

    def _post_final_part(self, notice: InterruptionNotice) -> JobStatus | None:
        """Post to the host's rounds until it records the end of this attempt (its final
        round committed with this machine's last part) or the notice's deadline passes; the
        status it read last (None: none read)."""
        deadline = notice.deadline if notice.deadline is not None else self._clock() + self._end_wait
        status, ended = self._post_until(
            lambda s: s.state in FINAL_STATES or attempt_ended(s.attempts, self._attempt), deadline)
        if ended:
            log.info("job %s: the host recorded the attempt's end", self.spec.job_id)
        else:
            log.warning("job %s: the host recorded no end of its attempt before the notice's deadline",
                        self.spec.job_id)
        return status

    def _post_until_the_end(self) -> None:
        """Post to the host's rounds (its final one comes after its script ended) until it
        records the job's end."""
        status, ended = self._post_until(lambda s: s.state in FINAL_STATES, self._clock() + self._end_wait)
        if ended:
            log.info("job %s %s (recorded by the host)", self.spec.job_id, status.state)
        elif not self._host_lost:
            log.warning("job %s: the host recorded no end within %.0fs; leaving", self.spec.job_id, self._end_wait)

    def _post_until(self, done: Callable[[JobStatus], bool], deadline: float) -> tuple[JobStatus | None, bool]:
        """Post this machine's part to every open round until status.json shows ``done`` or
        ``deadline`` passes: the status read last, and whether it was ``done``."""
        status = None
        while self._clock() < deadline:
            self._post_open_round()
            status = self._read_status()
            if status is not None and done(status):
                return status, True
            if self._host_gone():
                # It may have recorded the end and left since the read: the record decides.
                status = self._read_status()
                if status is not None and done(status):
                    return status, True
                self._host_lost = True
                log.warning("job %s: its host %s is no longer live; this machine stops waiting for it",
                            self.spec.job_id, self.node.rendezvous.record.instance_id)
                return status, False
            self._sleep(self._poll)
        return status, False

    def _read_status(self) -> JobStatus | None:
        try:
            return read_status(self.store, self.spec.job_id)
        except RunctlError as exc:
            log.warning("job %s: cannot read its status: %s", self.spec.job_id, exc)
            return None

    def _host_gone(self) -> bool:
        """Whether the host's membership is no longer live (looked at every ``HOST_CHECK_S``)."""
        now = self._clock()
        if now < self._next_host_check:
            return False
        self._next_host_check = now + HOST_CHECK_S
        host = self.node.rendezvous.record.instance_id
        try:
            gone = host not in {n.instance_id for n in self.node.live()}
        except RunctlError as exc:
            log.warning("job %s: cannot list its machines: %s", self.spec.job_id, exc)
            return False
        return gone

    def _post_open_round(self) -> None:
        """Post this machine's part to the open round, once per round."""
        try:
            rnd = self.rounds.current_round()
            if rnd is None or rnd.state != OPEN or rnd.seq in self._posted or \
                    self.node.instance_id not in rnd.expected:
                return
            if self._catching_up(rnd.seq):
                return
            self.rounds.post_part(rnd, self.node.instance_id, self.folder)
        except PreconditionFailed as exc:  # the round closed meanwhile: nothing to post to
            log.info("job %s: %s", self.spec.job_id, exc)
            return
        except RunctlError as exc:  # tried again at the next look
            log.warning("job %s: could not post this machine's part: %s", self.spec.job_id, exc)
            return
        self._posted.add(rnd.seq)

    def _catching_up(self, seq: int) -> bool:
        """Whether to hold this machine's part back a moment: the host posted first, and its
        part has a checkpoint this folder has not renamed into place yet. Posting now would
        make the round's snapshot resume from the checkpoint before (its ``newest`` is one
        every machine has)."""
        now = self._clock()
        first = self._first_seen.setdefault(seq, now)
        others = [p for p in self.rounds.parts(seq) if p.instance != self.node.instance_id]
        missing = behind(others, {rel.split("/", 1)[0] for rel in scan_folder(self.folder)})
        if missing is None or now - first >= CATCH_UP_S:
            return False
        log.debug("job %s: round %d waits for %s here", self.spec.job_id, seq, missing)
        return True
