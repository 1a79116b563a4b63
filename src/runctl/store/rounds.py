"""Sharded snapshot rounds: the records and the decisions. Pure: no I/O.

A job of several machines makes one snapshot from every machine's files (each machine can
read only its own). Its committer opens a round: the next seq, the machines expected, its
lease generation and a deadline, in one record replaced on its version (``round_key``).
Each machine puts its files into the snapshot folder ``<prefix><seq>/`` and then writes its
part record (``part_key``), outside that folder, so that the folder holds exactly the
checkpoint's files. The committer writes the manifest, the union of the parts, once every
expected part is there (``runctl.store.sharded`` does the I/O)::

    <prefix>rounds/round.json                  the current round
    <prefix>rounds/<seq:08d>/<instance>.json   one machine's part of round seq

Everything read from the store is untrusted: the parsers check every field and raise
IntegrityError naming what is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from runctl.errors import IntegrityError
from runctl.models import FileEntry
from runctl.store.manifest import check_paths, json_object, next_seq, path_problem, seq_name

ROUND_FORMAT = "runctl.round/1"
PART_FORMAT = "runctl.part/1"
OPEN, COMMITTED, ABANDONED = "open", "committed", "abandoned"
_STATES = (OPEN, COMMITTED, ABANDONED)
_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


# -- keys --------------------------------------------------------------------------------
def rounds_prefix(prefix: str) -> str:
    """Beside the seq folders; not a seq name, so no snapshot listing or retention sees it."""
    return f"{prefix}rounds/"


def round_key(prefix: str) -> str:
    return f"{rounds_prefix(prefix)}round.json"


def parts_prefix(prefix: str, seq: int) -> str:
    return f"{rounds_prefix(prefix)}{seq_name(seq)}/"


def part_key(prefix: str, seq: int, instance: str) -> str:
    return f"{parts_prefix(prefix, seq)}{instance}.json"


def instance_problem(instance: Any) -> str | None:
    """Why ``instance`` may not name a machine in a key, or None."""
    if not isinstance(instance, str) or not _INSTANCE.fullmatch(instance):
        return f"{instance!r} is not an instance id (letters, digits, '.', '_', '-')"
    return None


# -- records -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Round:
    seq: int
    expected: tuple[str, ...]  # instance ids, sorted
    generation: int  # the lease generation of the committer that opened it
    deadline: datetime  # UTC: when the committer gives up waiting for parts
    state: str = OPEN


@dataclass(frozen=True)
class Clash:
    """A path this machine has that another machine had put into the snapshot first,
    with other content: the first writer's content stays."""

    path: str
    sha256: str  # this machine's
    stored_sha256: str  # what the snapshot holds


@dataclass(frozen=True)
class Part:
    seq: int
    instance: str
    files: tuple[FileEntry, ...]  # in the snapshot with this content (put, or found there)
    shared: tuple[str, ...] = ()  # of files: found there already, same content
    clashes: tuple[Clash, ...] = ()
    newest: dict[str, int] | None = None  # top-level entry -> newest mtime (ns) on this machine


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def build_round(rnd: Round) -> bytes:
    return json.dumps({"format": ROUND_FORMAT, "seq": rnd.seq, "expected": list(rnd.expected),
                       "lease_generation": rnd.generation, "deadline": _iso(rnd.deadline),
                       "state": rnd.state}, indent=1).encode("utf-8") + b"\n"


def parse_round(data: bytes, where: str) -> Round:
    doc = json_object(data, where)
    if doc.get("format") != ROUND_FORMAT:
        raise IntegrityError(f"{where} has format {doc.get('format')!r}; expected {ROUND_FORMAT!r}")
    seq, generation, state = doc.get("seq"), doc.get("lease_generation"), doc.get("state")
    if not _is_count(seq) or not _is_count(generation) or state not in _STATES:
        raise IntegrityError(f"{where}: seq, lease_generation or state is not valid")
    expected = doc.get("expected")
    if not isinstance(expected, list) or not expected:
        raise IntegrityError(f"{where}: 'expected' is not a list of instance ids")
    for instance in expected:
        problem = instance_problem(instance)
        if problem:
            raise IntegrityError(f"{where}: {problem}")
    try:
        deadline = datetime.fromisoformat(str(doc.get("deadline")).replace("Z", "+00:00"))
    except ValueError as exc:
        raise IntegrityError(f"{where}: 'deadline' is not a time") from exc
    if deadline.tzinfo is None:
        raise IntegrityError(f"{where}: 'deadline' has no time zone")
    return Round(seq=seq, expected=tuple(sorted(set(expected))), generation=generation, deadline=deadline,
                 state=state)


def build_part(part: Part) -> bytes:
    return json.dumps({
        "format": PART_FORMAT, "seq": part.seq, "instance": part.instance,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in sorted(part.files, key=lambda f: f.path)],
        "shared": sorted(part.shared),
        "clashes": [{"path": c.path, "sha256": c.sha256, "stored_sha256": c.stored_sha256} for c in part.clashes],
        "newest": dict(sorted((part.newest or {}).items())),
    }, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"


def parse_part(data: bytes, where: str) -> Part:
    doc = json_object(data, where)
    if doc.get("format") != PART_FORMAT:
        raise IntegrityError(f"{where} has format {doc.get('format')!r}; expected {PART_FORMAT!r}")
    if not _is_count(doc.get("seq")) or instance_problem(doc.get("instance")):
        raise IntegrityError(f"{where}: seq or instance is not valid")
    raw_files, shared, raw_clashes, newest = (doc.get("files"), doc.get("shared"), doc.get("clashes"),
                                              doc.get("newest"))
    if not all(isinstance(x, list) for x in (raw_files, shared, raw_clashes)) or not isinstance(newest, dict):
        raise IntegrityError(f"{where}: files, shared, clashes or newest has the wrong type")
    files = []
    for raw in raw_files:
        if not isinstance(raw, dict) or not _is_count(raw.get("size")) or not _SHA256.match(str(raw.get("sha256"))):
            raise IntegrityError(f"{where}: file entry {raw!r} is not valid")
        files.append(FileEntry(path=raw.get("path"), size=raw["size"], sha256=raw["sha256"]))
    check_paths((f.path for f in files), where)
    if not set(shared) <= {f.path for f in files}:
        raise IntegrityError(f"{where}: a shared path is not among its files")
    clashes = []
    for raw in raw_clashes:
        if (not isinstance(raw, dict) or path_problem(raw.get("path"))
                or not all(_SHA256.match(str(raw.get(k))) for k in ("sha256", "stored_sha256"))):
            raise IntegrityError(f"{where}: clash {raw!r} is not valid")
        clashes.append(Clash(raw["path"], raw["sha256"], raw["stored_sha256"]))
    if any(path_problem(top) or "/" in top or not _is_count(mtime) for top, mtime in newest.items()):
        raise IntegrityError(f"{where}: 'newest' is not a map of top-level entries to times")
    return Part(seq=doc["seq"], instance=doc["instance"], files=tuple(files), shared=tuple(shared),
                clashes=tuple(clashes), newest=newest)


# -- decisions ---------------------------------------------------------------------------
def next_round_seq(seqs: Iterable[int], last: Round | None) -> int:
    """One past every seq folder present and past the last round opened: a round that
    ended with no file in its folder (abandoned before any part came) is never reused,
    so a late part of it can never land in a later round's folder."""
    return max(next_seq(seqs), (last.seq + 1) if last is not None else 1)


def missing_parts(rnd: Round, parts: Iterable[Part]) -> list[str]:
    """The expected machines whose part of ``rnd`` is not there; [] when it is complete."""
    have = {p.instance for p in parts if p.seq == rnd.seq}
    return [instance for instance in rnd.expected if instance not in have]


def newest_by_entry(files: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Per top-level entry of a folder (a file, or a folder of files), the newest mtime of
    its files; ``files`` are (relative path, mtime_ns)."""
    newest: dict[str, int] = {}
    for rel, mtime in files:
        top = rel.split("/", 1)[0]
        newest[top] = max(mtime, newest.get(top, mtime))
    return newest


def newest_common_entry(parts: Sequence[Part]) -> str | None:
    """Of the top-level entries every machine has, the most recently modified (newest
    mtime on any machine; ties by name), or None. A checkpoint folder every machine has
    renamed into place is complete; one only some machines have is not, so it is never
    named as the one to resume from."""
    if not parts:
        return None
    common = set.intersection(*(set(p.newest or {}) for p in parts))
    if not common:
        return None
    return max(common, key=lambda top: (max((p.newest or {})[top] for p in parts), top))


def union_of_parts(parts: Sequence[Part]) -> list[FileEntry]:
    """The snapshot's files: every part's, sorted. A path two parts list with different
    content cannot be (the second machine finds the first one's and records a clash, not a
    file): IntegrityError, as the parts then do not describe what the folder holds."""
    files: dict[str, FileEntry] = {}
    for part in parts:
        for f in part.files:
            seen = files.setdefault(f.path, f)
            if seen != f:
                raise IntegrityError(f"parts of snapshot {part.seq} disagree on {f.path}: "
                                     f"{seen.sha256[:12]} and {f.sha256[:12]} ({part.instance})")
    return sorted(files.values(), key=lambda f: f.path)


def clashes_of(parts: Sequence[Part]) -> list[tuple[str, Clash]]:
    """Every clash the parts recorded, with the machine that found it."""
    return [(p.instance, c) for p in parts for c in p.clashes]
