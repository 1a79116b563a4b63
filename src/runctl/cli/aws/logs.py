"""runctl aws logs INSTANCE_ID|JOB [-f]: a job's output from the AWS job store.

Given an instance id, the job is the one last assigned to that instance. The printing
itself is ``runctl logs`` on the AWS store.
"""

from __future__ import annotations

import re

import click

from runctl.cli._context import output_option, pass_app
from runctl.errors import UsageError

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?\Z")


@click.command("logs", short_help="Print (or follow) the output of a job on AWS, by job or instance.")
@click.argument("target", metavar="INSTANCE_ID|JOB")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--attempt", type=int, help="Only this attempt (default: all).")
@click.option("--store", metavar="URL",
              help="Job store (default: an s3:// [checkpoint] store, else s3://<[aws] s3_bucket>/runctl).")
@output_option
@pass_app
@click.pass_context
def logs(ctx, app, target, follow, attempt, store):
    """Print the output of JOB, or of the job last sent to INSTANCE_ID, from the store."""
    from runctl.cli.aws.train import aws_store_url
    from runctl.cli.logs import logs as store_logs

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
    ctx.invoke(store_logs, job_id=job_id, follow=follow, attempt=attempt, store=url)
