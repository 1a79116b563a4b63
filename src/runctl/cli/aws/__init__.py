"""runctl aws ...: run jobs on EC2 (one module per command, imported lazily)."""

from __future__ import annotations

import click

from runctl.cli._lazy import LazyGroup

COMMANDS: dict[str, tuple[str, str]] = {
    # "name": ("runctl.cli.aws.<module>:<command>", "short help"),
    "train": ("runctl.cli.aws.train:train", "Run a script on an instance's runctl agent, with the project's code."),
    "logs": ("runctl.cli.aws.logs:logs", "Print (or follow) the output of a job on AWS, by job or instance."),
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS)
def aws() -> None:
    """Run training on EC2 instances, spot or on-demand."""
