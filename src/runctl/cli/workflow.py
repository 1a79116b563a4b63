"""runctl workflow ...: multi-step recipes. ``workflow train`` is ``runctl aws run``:
launch an instance, train on it, terminate it."""

from __future__ import annotations

import click

from runctl.cli.aws.run import run as aws_run


@click.group()
def workflow() -> None:
    """Multi-step recipes (launch, train, clean up)."""


workflow.add_command(aws_run, name="train")
