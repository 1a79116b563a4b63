"""runctl logs JOB [-f]: a job's output, as the agent uploaded it to the store."""

from __future__ import annotations

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app
from runctl.cli._logs import node_option, show_logs


@click.command(short_help="Print (or follow) a job's logs from the store.")
@click.argument("job_id", metavar="JOB")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--attempt", type=int, help="Only this attempt (default: all).")
@node_option
@_common.store_option()
@output_option
@pass_app
def logs(app, job_id, follow, attempt, node, store):
    """Print JOB's output from the store, attempt by attempt."""
    job_store, _ = _common.find_job(app, store, job_id)
    show_logs(app, job_store, job_id, follow=follow, attempt=attempt, node=node)
