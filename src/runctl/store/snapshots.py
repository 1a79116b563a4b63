"""Checkpoint snapshots in a store: commit, list, latest, restore, prune, verify.

Layout under ``prefix`` (e.g. ``jobs/<id>/checkpoints/``)::

    <prefix><seq:08d>/<relative file path>    the checkpoint's files, as they are
    <prefix><seq:08d>/MANIFEST.json           written last

Every object of a commit, the files and the manifest, is written with if_none_match
(create-only): two writers that picked the same seq never interleave; the one that finds an
object of the other's fails with PreconditionFailed and leaves the other's snapshot whole.

A snapshot is complete only when its manifest exists and validates; ``latest`` is the
highest complete seq, leaving out stale ones (of a lower lease generation than an earlier
snapshot: see ``runctl.store.fencing``). A new commit takes one past the highest seq folder
present, complete or not, so the leftovers of a crashed commit are never reused. A crash at
any moment therefore leaves the previous complete snapshot as the latest. Anyone with the AWS
CLI can ``aws s3 cp --recursive`` a snapshot folder and use the files directly.

The decisions (manifest validation, what to upload, what to prune) are pure functions in
``runctl.store.manifest`` and ``runctl.store.retention``; this module carries them out
against a ``Store``, its files moved by ``runctl.store.snapshot_transfers`` and restored by
``runctl.store.snapshot_restore``. A snapshot made of several machines' files is put in
place by ``runctl.store.sharded``, which uses ``hash_files`` and ``publish`` from here.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

from runctl.errors import IntegrityError, NotFoundError, PreconditionFailed
from runctl.models import CheckpointInfo, FileEntry
from runctl.store.base import ProgressCallback, Store, file_mismatch
from runctl.store.fencing import GENERATION_KEY, Fence, generation_of, without_stale
from runctl.store.retention import plan_retention
from runctl.store.hashing import HashCache, SourceFile, scan_source
from runctl.store.manifest import (
    MANIFEST_NAME,
    Transfer,
    build_manifest,
    manifest_key,
    next_seq,
    parse_manifest,
    parse_seq_name,
    plan_commit,
    same_files,
    seq_name,
    snapshot_prefix,
)
from runctl.store.snapshot_restore import restore_files
from runctl.store.snapshot_transfers import SnapshotFileWriter, local_object, parallel

log = logging.getLogger(__name__)

__all__ = ["Snapshots"]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Snapshots:
    """The checkpoint snapshots stored under ``prefix`` in ``store``.

    ``workers`` threads hash, upload, copy and download files in parallel. ``clock`` gives
    the ``created`` time of new snapshots. An instance keeps an in-memory cache of the
    hashes of local files (see ``HashCache``); keep one instance per job for periodic syncs.
    ``hash_cache_file``: where that cache is kept across processes (a restarted agent's first
    commit then reads only the files that changed); saved after each commit and restore.
    Progress callbacks may be called from worker threads.
    """

    def __init__(self, store: Store, prefix: str, *, workers: int = 8,
                 clock: Callable[[], datetime] = _utc_now, hash_cache_file: Path | None = None) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.store = store
        self.prefix = prefix
        self.workers = max(1, int(workers))
        self._clock = clock
        self._hashes = HashCache(file=hash_cache_file)

    def __repr__(self) -> str:
        return f"Snapshots({self.url})"

    @property
    def url(self) -> str:
        return f"{self.store.url.rstrip('/')}/{self.prefix}".rstrip("/")

    def _snapshot_url(self, seq: int) -> str:
        return f"{self.store.url.rstrip('/')}/{self.prefix}{seq_name(seq)}"

    # -- reading -------------------------------------------------------------------------
    def all_seqs(self) -> list[int]:
        """The seq of every snapshot folder present, complete or not, ascending."""
        names = self.store.list_dirs(self.prefix)
        return sorted(s for s in map(parse_seq_name, names) if s is not None)

    def _read(self, seq: int) -> CheckpointInfo:
        blob = self.store.read(manifest_key(self.prefix, seq))  # NotFoundError: incomplete
        return parse_manifest(blob.data, url=self._snapshot_url(seq), seq=seq)

    def _try_read(self, seq: int) -> CheckpointInfo | None:
        try:
            return self._read(seq)
        except NotFoundError:
            return None
        except IntegrityError as exc:
            log.warning("ignoring snapshot %d: %s", seq, exc)
            return None

    def _current(self, seqs: list[int]) -> list[CheckpointInfo]:
        # Every manifest is read: a stale snapshot is known only against all earlier ones
        # (retention keeps them few).
        return without_stale(info for info in parallel(self._try_read, seqs, self.workers) if info is not None)

    def _latest_of(self, seqs: list[int]) -> CheckpointInfo | None:
        current = self._current(seqs)
        return current[-1] if current else None

    def list(self) -> list[CheckpointInfo]:
        """The complete snapshots, ascending seq, stale ones left out."""
        return self._current(self.all_seqs())

    def latest(self) -> CheckpointInfo | None:
        """The complete snapshot with the highest seq that is not stale, or None."""
        return self._latest_of(self.all_seqs())

    def get(self, seq: int) -> CheckpointInfo:
        """Snapshot ``seq``: NotFoundError if missing or incomplete, IntegrityError if its
        manifest does not validate."""
        try:
            return self._read(seq)
        except NotFoundError as exc:
            raise NotFoundError(f"no complete checkpoint snapshot {seq} at {self.url}") from exc

    def _resolve(self, snapshot: CheckpointInfo | int) -> CheckpointInfo:
        # Always the manifest as the store has it now, validated, whatever the caller holds.
        return self.get(snapshot.seq if isinstance(snapshot, CheckpointInfo) else int(snapshot))

    # -- commit --------------------------------------------------------------------------
    def commit(self, source: Path, *, files: Iterable[str] | None = None, carry: Iterable[str] = (),
               metadata: dict | None = None, progress: ProgressCallback | None = None,
               fence: Fence | None = None) -> CheckpointInfo | None:
        """Snapshot the files of ``source`` as a new complete snapshot and return it.

        ``files``: the relative paths to include (NotFoundError when one is missing); None
        means every regular file below ``source`` (symlinks are skipped with a warning, and
        so are temporary files whose names contain ``.runctl-tmp-``). No files: returns
        None. When the files equal the latest snapshot's (paths, sizes, sha256), nothing is
        written and the latest is returned.

        ``carry``: paths not to read now (a file still being written) but to keep as the
        latest snapshot holds them; a path the latest snapshot lacks is left out.

        A file whose content (sha256 and size) is in the latest snapshot under any path, or
        else in an older complete one (a file changed back), is copied inside the store
        (server-side on S3), the copy checked against that content;
        the others are uploaded in parallel. A source object that is bad or gone is not
        copied: the local file is uploaded instead, with a warning naming the object (a
        carried file has no local version to upload: IntegrityError, the commit fails).
        ``progress`` receives the uploaded byte counts (``pending_bytes`` is their total).

        A source file that changes while it is hashed or uploaded, or vanishes before its
        object is known to hold the scanned content, fails the commit with StoreError
        ("... changed while being snapshotted"): no manifest is written, so the snapshot
        stays incomplete and the latest one is unchanged; retry once the file is stable. A
        file deleted after that (copied checked against its hash, or uploaded and then
        found unchanged) stays in: the snapshot is the folder as scanned, and a script that
        keeps its last few checkpoints deletes the oldest meanwhile. Every object is written create-only, so a writer never
        replaces one another writer put in the same snapshot folder: PreconditionFailed when
        another writer claimed the same seq (a file or the manifest already there); nothing
        of the other writer's is touched, the objects this commit did create are deleted
        again (also when ``fence`` refuses), and the next commit takes a new seq.

        ``fence``: called right before the manifest is written (or the latest snapshot is
        returned as unchanged), it proves the writer holds the job's lease and returns its
        generation, recorded in the manifest's metadata; when it raises, or returns a lower
        generation than the latest snapshot's (PreconditionFailed), no manifest is written.
        """
        try:
            return self._commit(Path(source), files, carry, metadata, progress, fence)
        finally:
            self._hashes.save()  # what was hashed holds whether or not the commit went through

    def _commit(self, source: Path, files: Iterable[str] | None, carry: Iterable[str], metadata: dict | None,
                progress: ProgressCallback | None, fence: Fence | None) -> CheckpointInfo | None:
        scanned = scan_source(source, files)
        if files is None:
            self._hashes.forget_missing(under=source, keep=[s.path for s in scanned])
        seqs = self.all_seqs()
        current = self._current(seqs)
        previous = current[-1] if current else None
        fresh = {s.rel for s in scanned}
        carry = set(carry) - fresh
        carried = [f for f in previous.files if f.path in carry] if previous else []
        if not scanned and not carried:
            log.info("nothing to snapshot in %s", source)
            return None
        created = self._now()
        # Only files whose hash is not cached are read.
        entries = [*parallel(self._entry, scanned, self.workers, size=self._unhashed_bytes), *carried]

        if previous is not None and same_files(entries, previous.files):
            if fence is not None:  # "durable" only to a writer that still holds the lease
                self._fenced_generation(fence, previous)
            log.info("checkpoint unchanged since snapshot %d; nothing committed", previous.seq)
            return previous
        seq = next_seq(seqs)
        build_manifest(seq, created, entries, dict(metadata or {}))  # validates early: before any upload
        new_prefix = snapshot_prefix(self.prefix, seq)
        plan = plan_commit(entries, new_prefix, previous,
                           snapshot_prefix(self.prefix, previous.seq) if previous else None,
                           [(info, snapshot_prefix(self.prefix, info.seq)) for info in current[:-1]])
        writer = SnapshotFileWriter(self.store, new_prefix, seq, {s.rel: s for s in scanned},
                                    if_taken=lambda t: self._claimed(seq, t), progress=progress)
        try:
            done = writer.put(plan, self.workers)
            writer.finish()
            metadata = self._publish(seq, created, entries, metadata, fence, previous)
        except PreconditionFailed:
            # Refused (another writer's snapshot, or no lease): what this commit put into the
            # folder, perhaps beside another writer's files, is taken back.
            writer.take_back()
            raise
        uploaded = [entry for entry in done if entry is not None]
        log.info("committed snapshot %d at %s: %d files, %d uploaded (%d bytes), %d copied", seq, self.url,
                 len(entries), len(uploaded), sum(f.size for f in uploaded), len(entries) - len(uploaded))
        return self._info(seq, created, entries, metadata)

    def hash_files(self, source: Path) -> tuple[list[SourceFile], list[FileEntry]]:
        """The files of ``source`` as ``commit`` finds them, and their entries, hashed
        through this instance's cache (only files whose hash is not cached are read)."""
        scanned = scan_source(Path(source), None)
        self._hashes.forget_missing(under=Path(source), keep=[s.path for s in scanned])
        try:
            return scanned, parallel(self._entry, scanned, self.workers, size=self._unhashed_bytes)
        finally:
            self._hashes.save()

    def _claimed(self, seq: int, t: Transfer):
        raise PreconditionFailed(f"another writer is committing snapshot {seq} at {self.url}: "
                                 f"{t.entry.path} is there already; the next commit takes a new seq")

    def publish(self, seq: int, entries: list[FileEntry], *, metadata: dict | None = None,
                fence: Fence | None = None) -> CheckpointInfo:
        """Make snapshot ``seq`` complete: write the manifest of ``entries``, files already
        durable in its folder (put there by the machines of a sharded round), create-only
        and fenced as ``commit`` does. PreconditionFailed when the fence refuses or another
        manifest is there; nothing is deleted."""
        current = self._current([s for s in self.all_seqs() if s < seq])
        previous = current[-1] if current else None
        created = self._now()
        metadata = self._publish(seq, created, entries, metadata, fence, previous)
        log.info("published snapshot %d at %s: %d files", seq, self.url, len(entries))
        return self._info(seq, created, entries, metadata)

    def _publish(self, seq: int, created: str, entries: list[FileEntry], metadata: dict | None,
                 fence: Fence | None, previous: CheckpointInfo | None) -> dict:
        """Write the manifest, fenced; returns the metadata it holds (with the generation)."""
        metadata = dict(metadata or {})
        if fence is not None:
            metadata[GENERATION_KEY] = self._fenced_generation(fence, previous)
        manifest = build_manifest(seq, created, entries, metadata)
        try:
            self.store.write(manifest_key(self.prefix, seq), manifest, if_none_match=True)
        except PreconditionFailed as exc:
            if not self._holds_manifest(seq, manifest):
                raise PreconditionFailed(f"another writer committed snapshot {seq} at {self.url} first") from exc
        return metadata

    def _info(self, seq: int, created: str, entries: list[FileEntry], metadata: dict) -> CheckpointInfo:
        return CheckpointInfo(seq=seq, created=created, files=tuple(sorted(entries, key=lambda f: f.path)),
                              url=self._snapshot_url(seq), metadata=metadata)

    def _now(self) -> str:
        return self._clock().astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _holds_manifest(self, seq: int, manifest: bytes) -> bool:
        """After the manifest's create-only write was refused: whether it was our own write
        that landed (a retry after a lost answer meets it), read back and compared byte for
        byte. A read that fails raises: the files are then kept, as the snapshot may be ours."""
        try:
            return self.store.read(manifest_key(self.prefix, seq)).data == manifest
        except NotFoundError:
            return False

    def _fenced_generation(self, fence: Fence, previous: CheckpointInfo | None) -> int:
        generation = fence()
        if previous is not None and generation < generation_of(previous):
            raise PreconditionFailed(f"refusing a snapshot of lease generation {generation} at {self.url}: "
                                     f"snapshot {previous.seq} is of generation {generation_of(previous)}, "
                                     "another agent runs the job now")
        return generation

    def _unhashed_bytes(self, item: SourceFile) -> int:
        return 0 if self._hashes.lookup(item.path, item.state) is not None else item.state.size

    def _entry(self, item: SourceFile) -> FileEntry:
        return FileEntry(item.rel, item.state.size, self._hashes.digest(item.path, item.state))

    def pending_bytes(self, source: Path, files: Iterable[str] | None = None) -> int:
        """The bytes a commit would upload now, without reading any file.

        A file counts unless its hash is known from an earlier commit or restore (same size,
        mtime and inode) and its content is in a retained snapshot (a commit copies it from
        there): an upper bound, for deadline estimates.
        """
        scanned = scan_source(Path(source), files)
        known = {(f.sha256, f.size) for info in self.list() for f in info.files}
        total = 0
        for item in scanned:
            digest = self._hashes.lookup(item.path, item.state)
            if digest is None or (digest, item.state.size) not in known:
                total += item.state.size
        return total

    # -- restore -------------------------------------------------------------------------
    def restore(self, snapshot: CheckpointInfo | int, target: Path, *,
                progress: ProgressCallback | None = None) -> CheckpointInfo:
        """Make ``target`` hold the files of ``snapshot``, verified, and return its info.

        The manifest is read from the store and validated before anything is written; a
        path that is unsafe or would land outside ``target`` (also through a symlink) raises
        IntegrityError. Files are downloaded in parallel to temporary names, their size and
        sha256 checked (IntegrityError naming the file on a mismatch, every temporary file
        removed and ``target`` left as it was), then renamed into place. A file already in
        ``target`` with the right size and hash (read now, not trusted from the hash cache)
        is kept as is; files not in the snapshot are left alone. ``progress`` receives each
        file's bytes as it is settled.
        """
        info = self._resolve(snapshot)
        target = Path(target)
        downloaded = restore_files(self.store, info, snapshot_prefix(self.prefix, info.seq), target, self._hashes,
                                   workers=self.workers, progress=progress)
        self._hashes.save()
        log.info("restored snapshot %d into %s: %d files, %d downloaded", info.seq, target,
                 len(info.files), downloaded)
        return info

    # -- prune and verify ----------------------------------------------------------------
    def prune(self, keep_last_n: int, *, dry_run: bool = False) -> list[int]:
        """Keep the newest ``keep_last_n`` (>= 1) complete snapshots; remove older complete
        ones and incomplete folders older than the newest complete one. Returns the seqs
        removed (or that would be, with ``dry_run``)."""
        names = [seq_name(s) for s in self.all_seqs()]
        complete = [seq_name(info.seq) for info in self.list()]
        doomed = [int(name) for name in plan_retention(names, complete, keep_last_n).delete]
        if dry_run:
            return doomed
        for seq in doomed:
            keys = [o.key for o in self.store.list(snapshot_prefix(self.prefix, seq))]
            manifest = manifest_key(self.prefix, seq)
            # The manifest goes first: a prune cut short leaves an incomplete folder, never
            # a "complete" snapshot with missing files.
            if manifest in keys:
                self.store.delete([manifest])
            self.store.delete([k for k in keys if k != manifest])
            log.info("pruned snapshot %d at %s (%d objects)", seq, self.url, len(keys))
        return doomed

    def verify(self, snapshot: CheckpointInfo | int, *, progress: ProgressCallback | None = None) -> list[str]:
        """Check snapshot's manifest and every file's presence, size and sha256 in the
        store. Returns the problems found; [] means it verifies. NotFoundError when there is
        no manifest at all."""
        seq = snapshot.seq if isinstance(snapshot, CheckpointInfo) else int(snapshot)
        try:
            info = self.get(seq)
        except IntegrityError as exc:
            return [str(exc)]
        prefix = snapshot_prefix(self.prefix, seq)
        listed = {o.key: o.size for o in self.store.list(prefix)}
        problems: list[str] = []
        todo: list[FileEntry] = []
        for f in info.files:
            size = listed.get(prefix + f.path)
            if size is None:
                problems.append(f"{f.path}: missing from the store")
            elif size != f.size:
                problems.append(f"{f.path}: size {size} in the store, {f.size} in the manifest")
            else:
                todo.append(f)
        expected = {prefix + f.path for f in info.files} | {prefix + MANIFEST_NAME}
        problems += [f"{key[len(prefix):]}: in the snapshot folder but not in its manifest"
                     for key in sorted(set(listed) - expected)]
        with tempfile.TemporaryDirectory(prefix="runctl-verify-") as scratch:
            def check(f: FileEntry) -> str | None:
                key = prefix + f.path
                local = local_object(self.store, key)
                if local is None:
                    local = Path(scratch) / uuid.uuid4().hex
                    try:
                        self.store.download(key, local)
                    except NotFoundError:
                        return f"{f.path}: missing from the store"
                try:
                    problem = file_mismatch(local, f)
                finally:
                    if local.parent == Path(scratch):
                        local.unlink(missing_ok=True)
                if progress:
                    progress(f.size)
                return f"{f.path}: {problem}" if problem else None

            problems += [p for p in parallel(check, todo, self.workers) if p]
        return sorted(problems)

