"""``runctl aws stop``: stop an on-demand instance runctl launched."""

from __future__ import annotations

import click

from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import ec2, instance_argument, region_option, report_instance


@click.command("stop")
@instance_argument
@region_option
@output_option
@pass_app
def stop(app, instance_id, region):
    """Stop INSTANCE_ID (an on-demand instance runctl launched; spot ones can only be terminated)."""
    info = ec2(app, region).stop(instance_id)
    report_instance(app, info, "stopping: ")
