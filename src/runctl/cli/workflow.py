"""runctl workflow ...: multi-step recipes. ``workflow train`` is ``runctl aws run``: the job
runs on AWS in a group of its own, which resumes it and is deleted when it ends."""

from __future__ import annotations

import click

from runctl.cli._lazy import LazyGroup

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("runctl.cli.aws.run:run", "Run a script on AWS in a group of its own (runctl aws run)."),
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS)
def workflow() -> None:
    """Multi-step recipes (train on AWS from submission to clean-up)."""
