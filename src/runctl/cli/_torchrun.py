"""``--nproc-per-node``, shared by ``runctl run``, ``aws run`` and ``aws train``: the option,
and its check before anything starts or is uploaded (``runctl.agent.torchrun`` runs it)."""

from __future__ import annotations

from collections.abc import Sequence

import click

nproc_option = click.option(
    "--nproc-per-node", metavar="N|auto",
    help="Run the script under torchrun with N processes on the machine (auto: one per GPU, else one); "
         "every process gets the stop signal and the RUNCTL_* variables.")


def checked_nproc(command: Sequence[str], value: str | None, *, torch_here: bool) -> str | None:
    """``value`` as the job's spec holds it (None: one process, no torchrun), once ``command``
    can run under torchrun: a Python script, and with ``torch_here`` torch installed for its
    interpreter on this machine. UsageError otherwise, now rather than at the first attempt."""
    if value is None:
        return None
    from runctl.agent.torchrun import launch_command, parse_nproc

    nproc = parse_nproc(value)
    launch_command(command, nproc, grace_period=0, check=torch_here)
    return nproc
