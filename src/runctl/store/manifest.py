"""The checkpoint snapshot manifest and the snapshot protocol's decisions. Pure: no I/O.

A snapshot ``<prefix><seq:08d>/`` holds the checkpoint's files under their own relative
paths plus ``MANIFEST.json``, written last::

    {"format": "runctl.manifest/1", "seq": 3, "created": "2026-11-29T08:22:00.123Z",
     "total_bytes": 1234, "metadata": {...},
     "files": [{"path": "model.pt", "size": 1234, "sha256": "<64 hex>"}, ...]}

Everything read from a store is untrusted: ``parse_manifest`` checks every field and every
path (relative, no '..', no backslash, no empty part, no duplicate) and raises
``IntegrityError`` naming what is wrong, before anything acts on it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from runctl.errors import IntegrityError, UsageError
from runctl.store.fencing import GENERATION_KEY
from runctl.fsutil import TEMP_MARKER
from runctl.models import CheckpointInfo, FileEntry

log = logging.getLogger(__name__)

FORMAT = "runctl.manifest/1"
MANIFEST_NAME = "MANIFEST.json"
#: Temporary files of runctl and of the stores carry this in their names; never captured.

_SEQ_NAME = re.compile(r"^[0-9]{1,12}\Z")
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


# -- names -------------------------------------------------------------------------------
def seq_name(seq: int) -> str:
    """The folder name of snapshot ``seq``: eight digits, zero-padded."""
    return f"{seq:08d}"


def parse_seq_name(name: str) -> int | None:
    """The seq of a snapshot folder name, or None for anything else. Only the canonical
    spelling counts ("00000003", not "3" or "003"), so one seq has one folder."""
    if not _SEQ_NAME.fullmatch(name):
        return None
    seq = int(name)
    return seq if name == seq_name(seq) else None


def snapshot_prefix(prefix: str, seq: int) -> str:
    return f"{prefix}{seq_name(seq)}/"


def manifest_key(prefix: str, seq: int) -> str:
    return f"{snapshot_prefix(prefix, seq)}{MANIFEST_NAME}"


# -- paths -------------------------------------------------------------------------------
def path_problem(path: Any) -> str | None:
    """Why ``path`` may not name a file inside a snapshot, or None when it may."""
    if not isinstance(path, str) or not path:
        return "is not a non-empty string"
    if path.startswith("/"):
        return "is absolute"
    if "\\" in path:
        return "contains a backslash"
    if "\x00" in path:
        return "contains a NUL character"
    parts = path.split("/")
    if any(part == "" for part in parts):
        return "has an empty path component"
    if any(part in (".", "..") for part in parts):
        return "contains '.' or '..'"
    if path == MANIFEST_NAME:
        return f"is the reserved name {MANIFEST_NAME}"
    if TEMP_MARKER in parts[-1]:
        return f"is a temporary file name (contains {TEMP_MARKER!r})"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def check_paths(paths: Iterable[str], where: str) -> None:
    """Raise IntegrityError for the first unsafe, duplicate or file-and-folder path."""
    seen: set[str] = set()
    folders: set[str] = set()
    for path in paths:
        problem = path_problem(path)
        if problem:
            raise IntegrityError(f"{where}: file path {path!r} {problem}; refusing to use it")
        if path in seen:
            raise IntegrityError(f"{where}: file path {path!r} is listed twice")
        seen.add(path)
        parts = path.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = sorted(seen & folders)
    if clash:
        raise IntegrityError(f"{where}: {clash[0]!r} is listed both as a file and as a folder")


def newest_problem(newest: Any, files: Iterable[FileEntry]) -> str | None:
    """Why ``newest`` (a manifest's ``metadata.newest``) may not name the snapshot's newest
    checkpoint, or None when it may. It becomes the script's RUNCTL_RESUME_FROM and
    ``--resume {checkpoint}``, so it must be a top-level entry (a file, or a folder of
    files) of the snapshot itself; None (unset) is allowed."""
    if newest is None:
        return None
    if not isinstance(newest, str) or path_problem(newest) or "/" in newest:
        return f"{newest!r} is not the name of a file or folder at the snapshot's top level"
    if newest not in {f.path.split("/", 1)[0] for f in files}:
        return f"{newest!r} is not in the snapshot's files"
    return None


# -- the manifest ------------------------------------------------------------------------
def build_manifest(seq: int, created: str, files: Sequence[FileEntry], metadata: dict[str, Any]) -> bytes:
    """The MANIFEST.json bytes of a snapshot. ``files`` are written sorted by path."""
    ordered = sorted(files, key=lambda f: f.path)
    check_paths((f.path for f in ordered), f"snapshot {seq}")
    problem = newest_problem(metadata.get("newest"), ordered)
    if problem:
        # The newest file of a folder may be one no snapshot can hold (skipped by the commit):
        # the snapshot is still worth having, without a hint parse_manifest would refuse.
        log.warning("snapshot %d: leaving out metadata.newest: %s", seq, problem)
        metadata = {key: value for key, value in metadata.items() if key != "newest"}
    document = {
        "format": FORMAT,
        "seq": seq,
        "created": created,
        "total_bytes": sum(f.size for f in ordered),
        "metadata": metadata,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in ordered],
    }
    try:
        return json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"
    except (TypeError, ValueError) as exc:
        raise UsageError(f"snapshot metadata is not JSON-serialisable: {exc}") from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def json_object(data: bytes, where: str) -> dict:
    """A record's bytes as a JSON object; IntegrityError naming ``where`` otherwise."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise IntegrityError(f"{where} is not a JSON object")
    return doc


def parse_manifest(data: bytes, *, url: str, seq: int | None = None) -> CheckpointInfo:
    """Validate MANIFEST.json bytes into a CheckpointInfo; IntegrityError says what is wrong.

    ``url`` is where the snapshot lives (used in the result and in messages); ``seq``, when
    given, is the seq of the folder the manifest was read from and must match.
    """
    where = f"manifest {url}/{MANIFEST_NAME}"
    doc = json_object(data, where)
    if doc.get("format") != FORMAT:
        raise IntegrityError(f"{where} has format {doc.get('format')!r}; expected {FORMAT!r}")
    if not _is_int(doc.get("seq")) or doc["seq"] < 0:
        raise IntegrityError(f"{where} has no valid seq")
    if seq is not None and doc["seq"] != seq:
        raise IntegrityError(f"{where} says seq {doc['seq']} but sits in folder {seq_name(seq)}")
    created = doc.get("created", "")
    if not isinstance(created, str):
        raise IntegrityError(f"{where}: 'created' is not a string")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise IntegrityError(f"{where}: 'metadata' is not an object")
    generation = metadata.get(GENERATION_KEY, 0)
    if not _is_int(generation) or generation < 0:
        raise IntegrityError(f"{where}: metadata {GENERATION_KEY} {generation!r} is not a lease generation "
                             "(a count from 0)")
    raw_files = doc.get("files")
    if not isinstance(raw_files, list):
        raise IntegrityError(f"{where}: 'files' is not a list")
    files = []
    for index, raw in enumerate(raw_files):
        raw_files[index] = None  # each entry's dict freed as it is read: a big manifest is not held twice
        if not isinstance(raw, dict):
            raise IntegrityError(f"{where}: a file entry is not an object: {raw!r}")
        path, size, digest = raw.get("path"), raw.get("size"), raw.get("sha256")
        if not _is_int(size) or size < 0:
            raise IntegrityError(f"{where}: file {path!r} has invalid size {size!r}")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise IntegrityError(f"{where}: file {path!r} has invalid sha256 {digest!r}")
        files.append(FileEntry(path=path, size=size, sha256=digest))
    check_paths((f.path for f in files), where)
    problem = newest_problem(metadata.get("newest"), files)
    if problem:
        raise IntegrityError(f"{where}: metadata.newest {problem}; refusing to resume from it")
    total = doc.get("total_bytes")
    if total is not None and total != sum(f.size for f in files):
        raise IntegrityError(f"{where}: total_bytes {total!r} is not the sum of the file sizes")
    return CheckpointInfo(seq=doc["seq"], created=created, files=tuple(files), url=url, metadata=metadata)


# -- decisions ---------------------------------------------------------------------------
def next_seq(seqs: Iterable[int]) -> int:
    """The seq of a new snapshot: one past every seq folder present, complete or not."""
    return max(seqs, default=0) + 1


def same_files(a: Iterable[FileEntry], b: Iterable[FileEntry]) -> bool:
    """True when two snapshots hold the same paths with the same sizes and hashes."""
    return sorted(a, key=lambda f: f.path) == sorted(b, key=lambda f: f.path)


@dataclass(frozen=True)
class Transfer:
    """How one file gets into a new snapshot: uploaded, or copied from ``source_key``."""

    entry: FileEntry
    source_key: str | None = None  # None: upload from the local file
    after_uploads: bool = False  # copies of a file this same commit uploads


def plan_commit(files: Sequence[FileEntry], new_prefix: str, previous: CheckpointInfo | None,
                previous_prefix: str | None,
                older: Sequence[tuple[CheckpointInfo, str]] = ()) -> list[Transfer]:
    """Decide, per file, upload or server-side copy.

    A file whose (sha256, size) is in the previous snapshot, under any path, is copied from
    there; else from the newest of ``older`` (the other retained snapshots, with their
    prefixes) that holds it, so a file changed back to an earlier version uploads nothing.
    A file whose content appears twice in this commit is uploaded once and copied.
    """
    known: dict[tuple[str, int], str] = {}
    sources = [(previous, previous_prefix)] if previous is not None and previous_prefix is not None else []
    for info, prefix in [*sources, *sorted(older, key=lambda pair: -pair[0].seq)]:
        for f in info.files:
            known.setdefault((f.sha256, f.size), prefix + f.path)
    plan: list[Transfer] = []
    uploaded: dict[tuple[str, int], str] = {}
    for f in sorted(files, key=lambda f: f.path):
        content = (f.sha256, f.size)
        if content in known:
            plan.append(Transfer(f, known[content]))
        elif content in uploaded:
            plan.append(Transfer(f, uploaded[content], after_uploads=True))
        else:
            uploaded[content] = new_prefix + f.path
            plan.append(Transfer(f))
    return plan
