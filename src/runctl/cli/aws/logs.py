"""runctl aws logs INSTANCE_ID|JOB [-f]: a job's output from the AWS job store.

Given an instance id, the job is the one last assigned to that instance. The printing
itself is ``runctl logs`` on the AWS store.
"""

from __future__ import annotations

import re

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app
from runctl.cli._logs import node_option, show_logs
from runctl.cli.aws._shared import aws_store_url
from runctl.errors import UsageError

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?\Z")


@click.command("logs", short_help="Print (or follow) the output of a job on AWS, by job or instance.")
@click.argument("target", metavar="INSTANCE_ID|JOB")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--attempt", type=int, help="Only this attempt (default: all).")
@node_option
@_common.store_option(_common.AWS_STORE)
@output_option
@pass_app
def logs(app, target, follow, attempt, node, store):
    """Print the output of JOB, or of the job last sent to INSTANCE_ID, from the store."""
    url = aws_store_url(app, store)
    job_id = target
    if INSTANCE_ID.match(target):
        from runctl.agent.assignment import read_assignment
        from runctl.store import open_store

        found = read_assignment(open_store(url), target)
        if found is None:
            raise UsageError(f"no job was sent to {target} (in {url}); runctl aws train {target} SCRIPT sends one")
        job_id = found[0].job_id
        app.output.note(f"runctl: {target} runs job {job_id} ({found[0].state})")
    job_store, _ = _common.find_job(app, url, job_id)
    show_logs(app, job_store, job_id, follow=follow, attempt=attempt, node=node)
