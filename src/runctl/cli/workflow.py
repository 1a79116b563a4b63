"""runctl workflow ...: multi-step recipes. ``workflow train`` is ``runctl aws run``:
launch an instance, train on it, terminate it."""

from __future__ import annotations

import click

from runctl.cli._lazy import LazyGroup

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("runctl.cli.aws.run:run", "Launch an instance, train a script on it, terminate it."),
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS)
def workflow() -> None:
    """Multi-step recipes (launch, train, clean up)."""
