"""A job of several machines (``JobSpec.nodes`` > 1): what each machine's agent adds.

Every instance of the job's group runs the same code (``runctl.agent.resident.run_job``):

1. ``Node.join``: register this machine's membership (renewed every heartbeat until it
   leaves) and agree on the rendezvous host (``runctl.agent.rendezvous``).
2. The host's agent runs the job as the one-machine agent does (lease, status.json,
   attempts), with two changes: its torchrun meets the others (``Node.launch``, once every
   machine is live) and its snapshots are sharded rounds (``RoundCommitter``): the host
   opens a round when the one-machine sync decides to snapshot, posts its own part, and
   commits once every machine's part is there.
3. Every other agent holds its membership only (``runctl.agent.node_follower``): it
   restores the latest snapshot, starts its torchrun, and posts its part to every round it
   finds open, until the host records the job's end.

A spot notice on a member (``node_follower``) asks every machine to stop
(``runctl.interruptions.job_stop``); the host stops its tree, commits the final round, and
moves the rendezvous epoch (``Node.advance_epoch``, ``NodeStopSource``) so that its next
attempt gathers the group's replacement under a new rendezvous id. A machine's membership
says the epoch its torchrun runs: a round expects the machines of the host's (the noticed
member, still posting its final part, but not a replacement already waiting), and a gather
counts those of the new one (the host joins it only at its next launch, after its final
round; a replacement restores only after its gather). A spot notice on the host asks
the same stop, but the host goes (``Node.going``): a survivor replaces it in the rendezvous
(``Node.rejoin``, ``runctl.agent.node_epochs``).

A machine lost without a notice asks nothing: every machine's ``NodeStopSource`` asks the
stop of its epoch once a machine of its gather is no longer live (its membership expired)
before a stop or the job's end. A torchrun that fails meanwhile (its collectives fail
without the lost peer) is judged only after the TTL + a margin (``Node.await_stop``): a
stop then makes it a stop, as a notice's. Each machine says in its membership that its
torchrun failed; once every machine of the gather says so, no machine was lost (a lost one
says nothing) and the script's failure is judged at once. A round needs every machine of the epoch live
(``RoundCommitter``), so no snapshot ever misses a lost machine's ranks. A member waiting
for a lost host rejoins and a survivor replaces it (``node_follower``). On AWS a vanished
peer may hang the collectives instead of failing them: the TTL alone triggers the stop.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from runctl.agent.membership import Membership, NodeRecord, live_nodes
from runctl.agent.periodic import Periodic
from runctl.agent.rendezvous import Rendezvous, advance_epoch, agree_on_host, read_rendezvous
from runctl.agent.torchrun import multinode_torchrun_argv, parse_nproc, resolve_nproc
from runctl.errors import JobFailed, RunctlError, StoreError, UsageError
from runctl.agent.status import read_status
from runctl.interruptions.job_stop import JobStopSource, request_stop
from runctl.models import CheckpointInfo, InterruptionNotice, JobSpec
from runctl.store.sharded import ShardedRounds

log = logging.getLogger(__name__)

#: A machine whose membership was not renewed for this long is gone (renewed every heartbeat).
MEMBERSHIP_TTL_S = 30.0
#: The resident agent's setting of that TTL in seconds (the fake cloud shortens it).
MEMBERSHIP_TTL_ENV = "RUNCTL_MEMBERSHIP_TTL"
#: How long the machines of a job wait for each other to boot before the job fails.
GATHER_TIMEOUT_S = 900.0
#: How long the host waits for every machine's part of a round before it abandons it.
ROUND_TIMEOUT_S = 300.0
#: The job's states after which no epoch follows: a machine that leaves then is no loss.
ENDED = ("completed", "failed", "stopped")
#: How often a machine looks for a machine of its epoch lost without a notice.
LOSS_CHECK_S = 2.0
#: After a torchrun's failure, how long past the membership TTL a machine waits for the stop
#: that a lost machine's peers ask for (they see its membership expire, then write stop.json).
LOSS_MARGIN_S = 10.0


def membership_ttl(value: str | None) -> float:
    """The membership TTL ``MEMBERSHIP_TTL_ENV`` gives (unset or blank: the default);
    UsageError when it is not a positive number of seconds. Pure."""
    if value is None or not value.strip():
        return MEMBERSHIP_TTL_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise UsageError(f"{MEMBERSHIP_TTL_ENV}={value!r} is not a positive number of seconds")
    return seconds


def all_present(nodes: Sequence[NodeRecord], expected: int) -> bool:
    """Whether the job's ``expected`` machines are live (``nodes``: ``live_nodes``'s). Pure."""
    return len({n.instance_id for n in nodes}) >= expected


def free_port(address: str) -> int:
    """A port free on ``address`` now, for the rendezvous this machine would host."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


class Node:
    """This machine in its job of several: its membership, the agreed host, the torchrun argv."""

    def __init__(self, store, spec: JobSpec, instance_id: str, address: str | None, *,
                 heartbeat_interval: float = 5.0, ttl: float = MEMBERSHIP_TTL_S,
                 gather_timeout: float = GATHER_TIMEOUT_S, poll: float = 0.5,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        if not address:
            raise UsageError(f"job {spec.job_id} runs on {spec.nodes} machines, but this machine's private address "
                             "is unknown (the metadata service gave no local-ipv4)")
        self.store = store
        self.spec = spec
        self.instance_id = instance_id
        self.membership = Membership(store, spec.job_id, instance_id, address, clock=clock)
        self.ttl = ttl
        self.gather_timeout = gather_timeout
        self._poll = poll
        self._clock = clock
        self._sleep = sleep
        self._renewal = Periodic(heartbeat_interval, self._renew)
        self.rendezvous: Rendezvous | None = None
        self.going = False  # this machine got a spot notice: it does not carry the job to the next epoch
        self._epoch = 0  # the epoch of the rendezvous record this machine read or wrote
        self._member_epoch = 0  # the epoch its membership says: the one its torchrun runs (or ran last)
        self.gathered: tuple[str, ...] = ()  # the machines the last gather found (instance ids) ...
        self.gathered_epoch = 0  # ... at this epoch: a loss of one of them stops the epoch

    @property
    def epoch(self) -> int:
        """The rendezvous epoch this machine runs (0 before ``join``)."""
        return self._epoch

    @property
    def is_host(self) -> bool:
        return self.rendezvous is not None and self.rendezvous.is_host

    def join(self) -> Rendezvous:
        """Register, agree on the host, and keep the membership renewed until ``leave``."""
        me = self.membership.register(0)
        self.rendezvous = agree_on_host(self.store, self.spec.job_id, me, free_port(me.address),
                                        now=self._clock(), ttl=self.ttl)
        self._epoch = self._member_epoch = self.rendezvous.record.epoch
        self.membership.register(self._epoch)
        self._renewal.start()
        log.info("job %s: %s is %s of %d machines (rendezvous %s, epoch %d)", self.spec.job_id, self.instance_id,
                 "the host" if self.is_host else "a member", self.spec.nodes, self.rendezvous.endpoint, self._epoch)
        return self.rendezvous

    def advance_epoch(self) -> None:
        """The host's move to the next epoch after a stop of every machine: a new rendezvous
        id and port for its next torchrun. Its membership stays at the stopped epoch until
        ``launch``: until then its final round expects the stopped epoch's machines only,
        and a replacement of the new epoch waits in its gather (restoring nothing) until the
        final snapshot is made. StoreError when the store does not answer or another machine
        replaced this host."""
        assert self.rendezvous is not None and self.is_host, "the host moves the epoch"
        record = advance_epoch(self.store, self.spec.job_id, self.rendezvous.record,
                               free_port(self.rendezvous.record.address))
        self.rendezvous = Rendezvous(record, True)
        self._epoch = record.epoch

    def rejoin(self, timeout: float) -> Rendezvous:
        """After a stop of every machine, this member's place in the next epoch: once the host
        moved the epoch (it stays the host) or left (a survivor replaces it, epoch + 1, and
        may be this machine). JobFailed when neither happens within ``timeout``."""
        assert self.rendezvous is not None, "join first"
        old = self.rendezvous.record
        deadline = self._clock() + timeout
        while True:
            try:
                found = read_rendezvous(self.store, self.spec.job_id)
                gone = old.instance_id not in {n.instance_id for n in self.live()}
            except StoreError as exc:
                log.warning("job %s: cannot read its rendezvous: %s", self.spec.job_id, exc)
                found, gone = None, False
            if gone or found is not None and found[0].epoch > old.epoch:
                break
            if self._clock() >= deadline:
                raise JobFailed(f"job {self.spec.job_id}: its host {old.instance_id} neither moved past epoch "
                                f"{old.epoch} nor left within {timeout:.0f}s of the stop; this machine gives up")
            self._sleep(self._poll)
        me = self.membership.register(self._member_epoch)
        self.rendezvous = agree_on_host(self.store, self.spec.job_id, me, free_port(me.address),
                                        now=self._clock(), ttl=self.ttl)
        self._epoch = self.rendezvous.record.epoch
        log.info("job %s: %s is %s of epoch %d", self.spec.job_id, self.instance_id,
                 "the host" if self.is_host else "a member", self._epoch)
        return self.rendezvous

    def _renew(self) -> None:
        try:
            self.membership.register(self._member_epoch)
        except RunctlError as exc:  # the record stays valid until its TTL: the next beat tries again
            log.warning("job %s: could not renew this machine's membership: %s", self.spec.job_id, exc)

    def live(self) -> list[NodeRecord]:
        return live_nodes(self.store, self.spec.job_id, self._clock(), self.ttl)

    def running(self) -> list[NodeRecord]:
        """The live machines of the epoch this machine's torchrun runs: the parts of a round."""
        return [n for n in self.live() if n.epoch == self._member_epoch]

    def wait_for_all(self) -> list[NodeRecord]:
        """The job's machines of this epoch once all of them are live (this one registered at
        it first); JobFailed after ``gather_timeout``."""
        if self._member_epoch != self._epoch:
            self._member_epoch = self._epoch  # first: a renewal meanwhile must not write the old one back
            self.membership.register(self._epoch)
        deadline = self._clock() + self.gather_timeout
        while True:
            try:
                nodes = self.live()
            except StoreError as exc:
                log.warning("job %s: cannot list its machines: %s", self.spec.job_id, exc)
                nodes = []
            nodes = [n for n in nodes if n.epoch == self._epoch]  # a machine of an epoch before is leaving
            if all_present(nodes, self.spec.nodes):
                self.gathered, self.gathered_epoch = tuple(n.instance_id for n in nodes), self._epoch
                return nodes
            if self._clock() >= deadline:
                raise JobFailed(f"job {self.spec.job_id}: only {len(nodes)} of its {self.spec.nodes} machines "
                                f"came within {self.gather_timeout:.0f}s; not starting it")
            self._sleep(self._poll)

    def lost(self) -> list[str]:
        """The machines of this epoch's gather whose membership is no longer live (this one
        aside): lost, unless a stop or the job's end let them leave. StoreError when the
        store does not answer."""
        if self.gathered_epoch != self._epoch:
            return []  # the host moved the epoch: the last gather's machines are stopping
        live = {n.instance_id for n in self.live()}
        return [i for i in self.gathered if i != self.instance_id and i not in live]

    def await_stop(self, sources: Sequence) -> InterruptionNotice | None:
        """After this machine's torchrun failed with no stop: the stop of its epoch when one
        comes within the TTL + a margin (``NodeStopSource`` among ``sources``), else None: the
        failure it was. A machine lost without a notice fails its peers' collectives at once,
        but its membership expires only after the TTL; only then is the stop asked for. So
        this machine says in its membership that its torchrun failed, and None comes at once
        when every machine of the gather says the same: the script failed everywhere."""
        watches = [s for s in sources if isinstance(s, NodeStopSource)]
        self._say_torchrun_failed()
        deadline = self._clock() + self.ttl + LOSS_MARGIN_S
        while watches:
            now = self._clock()
            for source in watches:
                notice = source.poll(now)
                if notice is not None:
                    return notice
            if self._all_failed():
                log.info("job %s: every machine's torchrun of epoch %d failed: no machine was lost",
                         self.spec.job_id, self._member_epoch)
                return None
            if now >= deadline:
                break
            self._sleep(self._poll)
        return None

    def _say_torchrun_failed(self) -> None:
        self.membership.failed_epoch = self._member_epoch
        try:
            self.membership.register(self._member_epoch)
        except RunctlError as exc:  # the others then wait the TTL for a stop, as for a loss
            log.warning("job %s: could not record this machine's torchrun failure: %s", self.spec.job_id, exc)

    def _all_failed(self) -> bool:
        """Whether every machine of this epoch's gather is live and says its torchrun of the
        epoch failed (False when the store does not answer: the TTL decides then)."""
        if self.gathered_epoch != self._member_epoch:
            return False
        try:
            failed = {n.instance_id for n in self.live() if n.failed_epoch == self._member_epoch}
        except StoreError:
            return False
        return set(self.gathered) <= failed

    def launch(self, command: Sequence[str]) -> list[str]:
        """The argv of this machine's torchrun for ``command``, once every machine is live."""
        assert self.rendezvous is not None, "join first"
        self.wait_for_all()
        nproc = resolve_nproc(parse_nproc(self.spec.nproc_per_node or "1"))
        return multinode_torchrun_argv(command, nproc, nnodes=self.spec.nodes, endpoint=self.rendezvous.endpoint,
                                       job_id=self.spec.job_id, epoch=self._epoch, is_host=self.is_host,
                                       grace_period=self.spec.grace_period, stop_signal=self.spec.stop_signal)

    def leave(self) -> None:
        """Stop renewing and delete the membership (best effort: it also goes stale by itself)."""
        self._renewal.stop()
        try:
            self.membership.leave()
        except RunctlError as exc:
            log.warning("job %s: could not delete this machine's membership (stale in %.0fs): %s",
                        self.spec.job_id, self.ttl, exc)


class RoundCommitter:
    """The host's commit, as ``CheckpointSync`` calls it: one sharded round of every live
    machine's folder instead of a snapshot of this folder alone."""

    def __init__(self, rounds: ShardedRounds, node: Node, *, timeout_s: float = ROUND_TIMEOUT_S, poll: float = 0.5,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.rounds = rounds
        self.node = node
        self.timeout_s = timeout_s
        self.deadline: float | None = None
        self._poll = poll
        self._clock = clock
        self._sleep = sleep

    def final_by(self, deadline: float | None) -> None:
        """Bound the rounds from now on (the final one) by ``deadline``, the notice's: a part
        that has not come by then never will (its machine is gone), and a round left open
        past it would refuse the next host's first round."""
        self.deadline = deadline

    def __call__(self, folder: Path, *, files, carry, metadata: dict, fence) -> CheckpointInfo:
        """Open a round for the live machines, post this machine's part (its whole folder:
        what it holds now is what it has settled), and commit once every part is there.
        StoreError when fewer than the job's machines are live (a snapshot without a
        machine's ranks must never be the latest) or when the round is abandoned (a part
        did not come, or a machine it expects is no longer live): the previous snapshot
        stays the latest, and the sync tries again."""
        expected = [n.instance_id for n in self.node.running()]
        if len(expected) < self.node.spec.nodes:
            raise StoreError(f"no round: only {len(expected)} of the job's {self.node.spec.nodes} machines of epoch "
                             f"{self.node.epoch} are live ({', '.join(expected) or 'none'}); a snapshot needs "
                             "every rank's part")
        timeout, why = self.timeout_s, ""
        left = self.deadline - self._clock() if self.deadline is not None else timeout
        if left < timeout:
            timeout, why = max(0.0, left), " (the notice's deadline)"
        rnd = self.rounds.open_round(expected, fence=fence, timeout_s=timeout)
        try:
            self.rounds.post_part(rnd, self.node.instance_id, folder)
            while True:
                result = self.rounds.commit(rnd, fence=fence, metadata=metadata)
                if result.snapshot is not None:
                    return result.snapshot
                if result.state != "open":
                    raise StoreError(f"round {rnd.seq} abandoned: no part from {', '.join(result.missing)} within "
                                     f"{timeout:.0f}s{why}")
                live = {n.instance_id for n in self.node.live()}
                gone = [i for i in result.missing if i not in live]
                if gone:  # its part will never come: abandoned now, not at the deadline
                    raise StoreError(f"round {rnd.seq} abandoned: {', '.join(gone)} is no longer live")
                self._sleep(self._poll)
        except BaseException:
            # Left open, the round would refuse the next one (the final snapshot) until its deadline.
            try:
                self.rounds.abandon(rnd)
            except RunctlError as exc:
                log.warning("round %d: could not abandon it: %s", rnd.seq, exc)
            raise


class NodeStopSource:
    """A machine's watch of the job's stop (``JobStopSource`` of its epoch): the stop stops its
    tree as a notice does. On the host that stays (no notice of its own: ``Node.going``) it
    also moves the rendezvous to the next epoch at once, before the final round: the group's
    replacement, launched at the notice, must join the new epoch, never the stopped one
    (whose stop would stop its script too)."""

    def __init__(self, node: Node, stops: JobStopSource, *, loss_interval: float = LOSS_CHECK_S) -> None:
        self._node = node
        self._stops = stops
        self._loss_interval = loss_interval
        self._next_loss_check = 0.0
        self._settled_epoch = 0  # the last epoch whose stop this machine saw or asked for

    def attempt_started(self, attempt: int, now: float) -> None:
        self._stops.attempt_started(attempt, now)

    def poll(self, now: float) -> InterruptionNotice | None:
        notice = self._stops.poll(now)
        if notice is None:
            self._stop_at_a_loss(now)
            return None
        self._settled_epoch = self._node.epoch
        if self._node.is_host and not self._node.going:
            try:
                self._node.advance_epoch()
            except RunctlError as exc:  # the replacement then joins the stopped epoch: say so loudly
                log.error("job %s: could not move the rendezvous past epoch %d: %s", self._node.spec.job_id,
                          self._node.epoch, exc)
        return notice

    def _stop_at_a_loss(self, now: float) -> None:
        """Ask every machine to stop this epoch when one of its gather is lost without a
        notice (its membership expired): the others' collectives fail or hang without it,
        and the job resumes with the group's replacement. Once per epoch; a machine that
        left after the job's end is no loss."""
        node = self._node
        if now < self._next_loss_check or self._settled_epoch >= node.epoch or not node.gathered:
            return
        self._next_loss_check = now + self._loss_interval
        try:
            lost = node.lost()
            if not lost:
                return
            status = read_status(node.store, node.spec.job_id)
            if status is not None and status.state in ENDED:
                return
            request_stop(node.store, node.spec.job_id, node.epoch,
                         f"{', '.join(lost)} lost without a notice (membership not renewed for {node.ttl:.0f}s)", None,
                         requested=now)
        except RunctlError as exc:  # looked at again at the next check
            log.warning("job %s: cannot tell whether a machine was lost: %s", node.spec.job_id, exc)
            return
        self._settled_epoch = node.epoch
        log.warning("job %s: %s lost without a notice: every machine of epoch %d stops", node.spec.job_id,
                    ", ".join(lost), node.epoch)

    def close(self) -> None:
        self._stops.close()


def stop_source(node: Node, *, interval: float = 1.0) -> NodeStopSource:
    """The interruption source of the job's stop for this machine (joined)."""
    return NodeStopSource(node, JobStopSource(node.store, node.spec.job_id, lambda: node.epoch, interval=interval))
