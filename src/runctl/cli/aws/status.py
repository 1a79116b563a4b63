"""``runctl aws status``: an instance's state, type, market, zone, addresses and job."""

from __future__ import annotations

import click

from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import compute, instance_argument, region_option, report_instance
from runctl.errors import CloudError


@click.command("status")
@instance_argument
@click.option("--require-running", is_flag=True, help="Exit 3 (with the reason) unless the instance is running.")
@region_option
@output_option
@pass_app
def status(app, instance_id, require_running, region):
    """Show INSTANCE_ID: state, type, spot or on-demand, zone, addresses, tags."""
    from runctl.backends.instances import not_running_message

    info = compute(app, region).describe(instance_id)
    report_instance(app, info)
    if require_running and info.state != "running":
        raise CloudError(not_running_message(info))
