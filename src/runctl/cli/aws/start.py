"""``runctl aws start``: start a stopped instance runctl launched."""

from __future__ import annotations

import click

from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import ec2, instance_argument, region_option, report_instance


@click.command("start")
@instance_argument
@region_option
@output_option
@pass_app
def start(app, instance_id, region):
    """Start INSTANCE_ID again (a stopped instance runctl launched)."""
    info = ec2(app, region).start(instance_id)
    report_instance(app, info, "starting: ")
