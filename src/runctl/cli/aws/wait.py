"""``runctl aws wait``: block until an instance reaches a state."""

from __future__ import annotations

import click

from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import compute, instance_argument, region_option, report_instance


@click.command("wait")
@instance_argument
@click.option("--state", type=click.Choice(["running", "stopped", "terminated"]), default="running",
              show_default=True, help="The state to wait for.")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True, help="Seconds to wait.")
@click.option("--poll", type=click.FloatRange(min=0.1), default=5, show_default=True,
              help="Seconds between checks.")
@region_option
@output_option
@pass_app
def wait(app, instance_id, state, timeout, poll, region):
    """Wait until INSTANCE_ID is STATE; exit 3 when it cannot get there or time runs out."""
    from runctl.backends.instances import wait_for

    info = wait_for(compute(app, region), instance_id, state, timeout=timeout, poll=poll)
    report_instance(app, info)
