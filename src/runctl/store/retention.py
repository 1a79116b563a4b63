"""Which checkpoint snapshot folders a retention policy removes. Pure: no I/O.

A snapshot is a folder ``checkpoints/<seq>/`` whose name is an integer (1 to 12 ASCII
digits, usually zero-padded to 8); it is complete once its ``MANIFEST.json`` exists.
``plan_retention`` keeps the newest ``keep_last_n`` complete snapshots, removes the older
complete ones and every incomplete one older than the newest complete snapshot. An
incomplete snapshot newer than that may be a commit in progress: it is left alone. So is
every folder whose name is not a seq. With no complete snapshot nothing is removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from runctl.errors import UsageError

_SEQ_NAME = re.compile(r"^[0-9]{1,12}\Z")


def seq_of(name: str) -> int | None:
    """The seq of a snapshot folder name, or None when the name is not a seq."""
    return int(name) if _SEQ_NAME.match(name) else None


@dataclass(frozen=True)
class RetentionPlan:
    keep: tuple[str, ...]  # complete snapshots kept, newest first
    delete: tuple[str, ...]  # snapshot folders to remove, oldest first
    in_progress: tuple[str, ...]  # incomplete snapshots newer than the newest complete one


def _order(name: str) -> tuple[int, str]:
    return (int(name), name)


def plan_retention(folders: Iterable[str], complete: Iterable[str], keep_last_n: int) -> RetentionPlan:
    """Decide what to keep and what to delete among the snapshot ``folders`` (names),
    ``complete`` naming those that have a manifest. Non-seq names are ignored."""
    if isinstance(keep_last_n, bool) or not isinstance(keep_last_n, int) or keep_last_n < 1:
        raise UsageError(f"keep-last-n must be at least 1, not {keep_last_n!r}")
    done = {name for name in complete if seq_of(name) is not None}
    every = {name for name in folders if seq_of(name) is not None} | done
    if not done:
        return RetentionPlan(keep=(), delete=(), in_progress=tuple(sorted(every, key=_order)))
    newest_first = sorted(done, key=_order, reverse=True)
    keep = newest_first[:keep_last_n]
    newest = _order(newest_first[0])
    delete = [name for name in every if name not in keep and _order(name) < newest]
    in_progress = [name for name in every if name not in done and _order(name) > newest]
    return RetentionPlan(
        keep=tuple(keep),
        delete=tuple(sorted(delete, key=_order)),
        in_progress=tuple(sorted(in_progress, key=_order)),
    )
