"""Sharded snapshots: one snapshot of a job made from the files of several machines.

A committer (in a job of several machines: the rendezvous host's agent, holding the job's
lease) opens a round (``open_round``): the next seq, the machines expected, its lease
generation and a deadline. Each machine posts its part (``post_part``): its folder's files
put into the snapshot folder create-only, content any retained complete snapshot holds
copied inside the store, then its part record. The committer commits (``commit``) once
every expected part is there: the manifest, the union of the parts, written create-only and
fenced as a one-machine commit's; its ``newest`` a top-level entry every machine has. A
round whose parts do not all come by its deadline is abandoned: it never gets a manifest,
so the previous complete snapshot stays the latest, and its objects go at the next prune,
as a crashed commit's do. Records and decisions: ``runctl.store.rounds``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from runctl.errors import IntegrityError, NotFoundError, PreconditionFailed, UsageError
from runctl.models import CheckpointInfo
from runctl.store.base import ProgressCallback
from runctl.store.fencing import Fence
from runctl.store.manifest import Transfer, plan_commit, snapshot_prefix
from runctl.store.rounds import (
    ABANDONED,
    COMMITTED,
    OPEN,
    Clash,
    Part,
    Round,
    build_part,
    build_round,
    clashes_of,
    instance_problem,
    missing_parts,
    newest_by_entry,
    newest_common_entry,
    next_round_seq,
    part_key,
    parse_part,
    parse_round,
    parts_prefix,
    round_key,
    rounds_prefix,
    union_of_parts,
)
from runctl.store.snapshot_transfers import SnapshotFileWriter
from runctl.store.snapshots import Snapshots

log = logging.getLogger(__name__)

__all__ = ["RoundResult", "ShardedRounds"]

_CHUNK = 1 << 20


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class RoundResult:
    """What ``commit`` found: ``committed`` (``snapshot`` is the new one), ``waiting`` (for
    the ``missing`` machines, before the deadline) or ``abandoned`` (past it)."""

    state: str
    snapshot: CheckpointInfo | None = None
    missing: tuple[str, ...] = ()


class ShardedRounds:
    """The rounds of the snapshots under ``snapshots`` (its store and prefix).

    ``clock`` gives the time a round's deadline is set from and compared with.
    """

    def __init__(self, snapshots: Snapshots, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.snapshots = snapshots
        self.store = snapshots.store
        self.prefix = snapshots.prefix
        self._clock = clock

    # -- the round record ----------------------------------------------------------------
    def current_round(self) -> Round | None:
        """The round opened last (whatever its state), or None."""
        found = self._read_round()
        return found[0] if found else None

    def _read_round(self) -> tuple[Round, str] | None:
        try:
            blob = self.store.read(round_key(self.prefix))
        except NotFoundError:
            return None
        return parse_round(blob.data, f"{self.store.url}/{round_key(self.prefix)}"), blob.etag

    def open_round(self, expected: Iterable[str], *, fence: Fence, timeout_s: float) -> Round:
        """Open the next round, for the machines ``expected`` (instance ids), whose parts are
        awaited for ``timeout_s`` seconds. ``fence`` proves the lease and gives the round its
        generation. PreconditionFailed: a round of a higher generation is there (another
        committer runs the job), the last round is still open and not past its deadline, or
        another committer replaced the record meanwhile."""
        expected = tuple(sorted(set(expected)))
        problems = [p for p in map(instance_problem, expected) if p]
        if not expected or problems:
            raise UsageError(f"a round needs the instance ids of its machines: {problems[0] if problems else 'none'}")
        generation = fence()
        found = self._read_round()
        last, etag = found if found else (None, None)
        now = self._clock()
        if last is not None:
            if last.generation > generation:
                raise PreconditionFailed(f"round {last.seq} at {self.snapshots.url} is of lease generation "
                                         f"{last.generation}, above this committer's {generation}")
            if last.state == OPEN and last.generation == generation and now < last.deadline:
                raise PreconditionFailed(f"round {last.seq} at {self.snapshots.url} is still open; "
                                         "commit it or let its deadline pass first")
        rnd = Round(seq=next_round_seq(self.snapshots.all_seqs(), last), expected=expected,
                    generation=generation, deadline=now + timedelta(seconds=timeout_s))
        if etag is None:
            self.store.write(round_key(self.prefix), build_round(rnd), if_none_match=True)
        else:
            self.store.write(round_key(self.prefix), build_round(rnd), if_match=etag)
        log.info("opened round %d at %s for %s", rnd.seq, self.snapshots.url, ", ".join(expected))
        return rnd

    # -- one machine's part ----------------------------------------------------------------
    def post_part(self, rnd: Round, instance: str, source: Path, *,
                  progress: ProgressCallback | None = None) -> Part:
        """Put the files of ``source`` (this machine's checkpoint folder) into round
        ``rnd``'s snapshot, then write this machine's part record, and return it.

        Every object is created only if absent. Content a retained complete snapshot holds
        is copied inside the store. A path another machine put there already: the same
        content (sha256) is listed as shared; other content is a clash, recorded in the part
        and logged, and the first writer's stays. PreconditionFailed when the round is not
        the open one or does not expect this machine. Posting again after a failure puts
        what is missing and finds the rest there; a part already recorded is returned as
        it is.
        """
        problem = instance_problem(instance)
        if problem or instance not in rnd.expected:
            raise PreconditionFailed(f"round {rnd.seq} does not expect {problem or instance}")
        self._check_open(rnd)
        key = part_key(self.prefix, rnd.seq, instance)
        try:
            return parse_part(self.store.read(key).data, f"{self.store.url}/{key}")
        except NotFoundError:
            pass
        scanned, entries = self.snapshots.hash_files(Path(source))
        new_prefix = snapshot_prefix(self.prefix, rnd.seq)
        retained = self.snapshots.list()
        latest = retained[-1] if retained else None
        plan = plan_commit(entries, new_prefix, latest,
                           snapshot_prefix(self.prefix, latest.seq) if latest else None,
                           [(info, snapshot_prefix(self.prefix, info.seq)) for info in retained[:-1]])
        shared: list[str] = []
        clashes: list[Clash] = []
        lock = threading.Lock()

        def found_there(t: Transfer) -> None:
            """Another machine (or this one's earlier try) put this path: what it holds."""
            stored = self._stored_sha256(new_prefix + t.entry.path)
            with lock:
                if stored == t.entry.sha256:
                    shared.append(t.entry.path)
                else:
                    clashes.append(Clash(t.entry.path, t.entry.sha256, stored))

        writer = SnapshotFileWriter(self.store, new_prefix, rnd.seq, {s.rel: s for s in scanned},
                                    if_taken=found_there, progress=progress)
        writer.put(plan, self.snapshots.workers)
        writer.finish()
        for clash in clashes:
            log.warning("round %d: %s of %s clashes with the snapshot's (sha256 %s, not %s): the first "
                        "machine's stays; a path several machines write must hold the same content",
                        rnd.seq, clash.path, instance, clash.stored_sha256[:12], clash.sha256[:12])
        clashed = {c.path for c in clashes}
        part = Part(seq=rnd.seq, instance=instance, files=tuple(f for f in entries if f.path not in clashed),
                    shared=tuple(sorted(shared)), clashes=tuple(sorted(clashes, key=lambda c: c.path)),
                    newest=newest_by_entry((s.rel, s.state.mtime_ns) for s in scanned))
        data = build_part(part)
        try:
            self.store.write(key, data, if_none_match=True)
        except PreconditionFailed:
            if self.store.read(key).data != data:
                raise
        log.info("round %d: posted the part of %s: %d files (%d shared, %d clashes)", rnd.seq, instance,
                 len(part.files), len(shared), len(clashes))
        return part

    def _stored_sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with contextlib.closing(self.store.open_read(key)) as body:
            while chunk := body.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def _check_open(self, rnd: Round) -> None:
        found = self._read_round()
        now = found[0] if found else None
        if now is None or (now.seq, now.generation, now.state) != (rnd.seq, rnd.generation, OPEN):
            raise PreconditionFailed(f"round {rnd.seq} at {self.snapshots.url} is not the open round")

    def parts(self, seq: int) -> list[Part]:
        """The part records of round ``seq`` (a record that does not validate is logged and
        left out: that machine's part counts as missing)."""
        parts = []
        for obj in self.store.list(parts_prefix(self.prefix, seq)):
            try:
                part = parse_part(self.store.read(obj.key).data, f"{self.store.url}/{obj.key}")
            except (NotFoundError, IntegrityError) as exc:
                log.warning("round %d: ignoring part %s: %s", seq, obj.key, exc)
                continue
            if part.seq == seq and obj.key == part_key(self.prefix, seq, part.instance):
                parts.append(part)
        return parts

    # -- the commit ----------------------------------------------------------------------
    def commit(self, rnd: Round, *, fence: Fence, metadata: dict | None = None) -> RoundResult:
        """Commit round ``rnd`` if every expected part is there; abandon it if not and its
        deadline has passed; else report the machines still missing.

        The manifest lists the union of the parts; its ``newest`` is the most recent
        top-level entry every machine has. ``fence`` as for ``Snapshots.commit``, and it
        must prove at least the round's generation. PreconditionFailed when the round is
        not the open one (another committer opened a newer round), or the fence refuses;
        IntegrityError when the parts disagree or a file they list is not in the folder.
        """
        found = self._read_round()
        if found is None or (found[0].seq, found[0].generation) != (rnd.seq, rnd.generation):
            raise PreconditionFailed(f"round {rnd.seq} at {self.snapshots.url} is no longer the current round")
        current, etag = found
        if current.state == COMMITTED:
            return RoundResult(COMMITTED, self.snapshots.get(rnd.seq))
        if current.state == ABANDONED:
            return RoundResult(ABANDONED, missing=tuple(missing_parts(current, self.parts(rnd.seq))))
        parts = [p for p in self.parts(rnd.seq) if p.instance in current.expected]
        missing = tuple(missing_parts(current, parts))
        if missing:
            if self._clock() < current.deadline:
                return RoundResult(OPEN, missing=missing)
            self._close(current, etag, ABANDONED)
            log.warning("round %d abandoned at its deadline: no part from %s; snapshot %s stays the latest",
                        rnd.seq, ", ".join(missing), self._latest_seq())
            return RoundResult(ABANDONED, missing=missing)
        files = union_of_parts(parts)
        for instance, clash in clashes_of(parts):
            log.warning("round %d: %s has %s with other content than the snapshot's; the first machine's stays",
                        rnd.seq, instance, clash.path)
        self._check_present(rnd.seq, files)
        newest = newest_common_entry(parts)
        metadata = {k: v for k, v in (metadata or {}).items() if k != "newest"}
        if newest is not None:
            metadata["newest"] = newest
        info = self.snapshots.publish(rnd.seq, files, metadata=metadata,
                                      fence=lambda: self._round_fence(fence, current))
        self._close(current, etag, COMMITTED)
        return RoundResult(COMMITTED, info)

    def abandon(self, rnd: Round) -> None:
        """Give round ``rnd`` up now, when it is still the open one (its committer failed on
        the way): it never gets a manifest, and the next round may open at once instead of
        after its deadline."""
        found = self._read_round()
        if found is not None and (found[0].seq, found[0].generation, found[0].state) == (rnd.seq, rnd.generation, OPEN):
            self._close(found[0], found[1], ABANDONED)
            log.warning("round %d abandoned: its commit failed", rnd.seq)

    def _round_fence(self, fence: Fence, rnd: Round) -> int:
        generation = fence()
        if generation < rnd.generation:
            raise PreconditionFailed(f"refusing round {rnd.seq} at {self.snapshots.url} from lease generation "
                                     f"{generation}: it was opened by generation {rnd.generation}")
        return generation

    def _check_present(self, seq: int, files: Sequence) -> None:
        """Every file the parts list is in the folder with its size: a part is written after
        its files, so a gap means a folder pruned or changed under the round."""
        prefix = snapshot_prefix(self.prefix, seq)
        listed = {o.key[len(prefix):]: o.size for o in self.store.list(prefix)}
        gone = [f.path for f in files if listed.get(f.path) != f.size]
        if gone:
            raise IntegrityError(f"round {seq}: {len(gone)} file(s) its parts list are not in the snapshot "
                                 f"folder as listed, e.g. {gone[0]}; not committing it")

    def _close(self, rnd: Round, etag: str, state: str) -> None:
        """Record the round's end. Refused (another committer replaced the record): logged
        only; a committed round's manifest stands either way."""
        try:
            self.store.write(round_key(self.prefix), build_round(replace(rnd, state=state)), if_match=etag)
        except PreconditionFailed as exc:
            log.warning("round %d: could not record it as %s: %s", rnd.seq, state, exc)

    def _latest_seq(self) -> int | None:
        latest = self.snapshots.latest()
        return latest.seq if latest else None

    # -- retention -----------------------------------------------------------------------
    def prune(self, keep_last_n: int) -> list[int]:
        """``Snapshots.prune``, then the part records of every round older than the newest
        complete snapshot (committed and superseded, or abandoned). Returns the seqs of the
        snapshot folders removed."""
        doomed = self.snapshots.prune(keep_last_n)
        newest = self._latest_seq()
        if newest is None:
            return doomed
        for name in self.store.list_dirs(rounds_prefix(self.prefix)):
            if name.isdigit() and int(name) < newest:
                keys = [o.key for o in self.store.list(parts_prefix(self.prefix, int(name)))]
                self.store.delete(keys)
        return doomed
