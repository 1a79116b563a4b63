"""A machine of a job of several across stops of every machine (``runctl.interruptions.job_stop``).

- A member follows the job epoch after epoch (``follow``): after a stop that another machine
  asked for, it posts its final part, then joins the next epoch (``Node.rejoin``): as a
  member when the host moved the epoch, or as the host when the host went (a spot notice on
  it) and this machine replaced it in the rendezvous; it then runs the job as the host.
- The host's spot notice asks every machine to stop (``stop_every_machine``): the host goes,
  so it moves no epoch (``Node.going``) and a survivor carries the job on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from runctl.agent.multinode import Node
from runctl.agent.node_follower import REJOIN, NodeFollower
from runctl.errors import RunctlError
from runctl.interruptions.job_stop import request_stop
from runctl.models import InterruptionNotice

log = logging.getLogger(__name__)


def follow(node: Node, spec, sources, run_dir: Path, *, on_notice: Callable[[InterruptionNotice], None],
           clock: Callable[[], float]) -> str | None:
    """This machine as a member (membership only: the host's agent holds the lease and
    records the job), epoch after epoch while the job stops and goes on; its outcome, or None
    once it replaced a host that went (the caller then runs the job as the host, with the
    same ``sources``; they are closed here otherwise)."""
    try:
        while True:
            outcome = NodeFollower(node, spec, sources, run_dir, on_notice=on_notice, clock=clock).run()
            if outcome != REJOIN:
                break
            node.rejoin(node.gather_timeout)
            if node.is_host:
                return None
    except BaseException:
        for source in sources:
            source.close()
        raise
    for source in sources:
        source.close()
    return outcome


def stop_every_machine(store, node: Node, notice: dict) -> None:
    """The host's spot notice (``notice``, as a dict): every machine of its epoch stops, and a
    survivor carries the job to the next epoch. Anything else is not this host going."""
    from runctl.agent.group_member import is_reclaim

    if not is_reclaim(notice) or node.going:
        return
    node.going = True
    try:
        request_stop(store, node.spec.job_id, node.epoch, f"spot notice on {node.instance_id}", notice.get("deadline"),
                     requested=notice.get("received"))
    except RunctlError as exc:  # the others' collectives fail once this torchrun is gone
        log.error("job %s: could not ask the other machines to stop: %s", node.spec.job_id, exc)
