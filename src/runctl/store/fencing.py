"""Fenced snapshots: which lease generation wrote a snapshot, and which snapshots are stale.

Each agent that takes a job's lease takes the next generation (``runctl.agent.lease``). A
commit proves the lease right before it writes the manifest (``Fence``: a conditional write
on the lease that fails for a stale holder) and records the generation in the manifest's
metadata. Generations therefore never go down as seqs go up, unless a stale writer raced
past its fence; such a snapshot, of a lower generation than an earlier complete one, is
stale: never the latest, never listed, so two writers can never interleave. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from runctl.models import CheckpointInfo

#: Where a manifest records its writer's lease generation (in its metadata). Absent: 0,
#: a snapshot of a runctl from before fencing, or written without a lease.
GENERATION_KEY = "lease_generation"

#: Proves the writer holds the job's lease now and returns its generation; raises a
#: StoreError (LeaseLost when another writer holds it) when it cannot.
Fence = Callable[[], int]


def generation_of(info: CheckpointInfo) -> int:
    return info.metadata.get(GENERATION_KEY, 0)


def without_stale(infos: Iterable[CheckpointInfo]) -> list[CheckpointInfo]:
    """The complete snapshots (ascending seq) that no earlier one outranks by generation."""
    current: list[CheckpointInfo] = []
    highest = 0
    for info in sorted(infos, key=lambda i: i.seq):
        generation = generation_of(info)
        if generation >= highest:
            current.append(info)
            highest = generation
    return current
