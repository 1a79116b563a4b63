"""``runctl aws terminate``: terminate an instance runctl launched."""

from __future__ import annotations

import click

from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import compute, instance_argument, region_option, report_instance


@click.command("terminate")
@instance_argument
@region_option
@output_option
@pass_app
def terminate(app, instance_id, region):
    """Terminate INSTANCE_ID (only instances runctl launched: tag runctl:created)."""
    from runctl.backends.instances import terminate_one

    info = terminate_one(compute(app, region), instance_id)
    report_instance(app, info, "terminating: ")
