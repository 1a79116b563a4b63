"""runctl aws watch JOB: follow a job on AWS and keep it running (the recovery controller).

Re-attaches from another terminal, or after a laptop was closed: streams the job's output
from the store (as ``aws train --wait`` does) and, when the job's instance receives a spot
notice or disappears, launches a replacement and resumes the job there
(``runctl.resume.controller``, driven by ``cli/aws/_recovery.py``). Exit code: the job's
(0, 1, 130).
"""

from __future__ import annotations

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._jobs import ended_warnings, show_warnings
from runctl.cli.aws._recovery import control, current_instance, report_outcome
from runctl.cli.aws._shared import aws_store_url, region_option
from runctl.errors import UsageError


@click.command("watch", short_help="Follow a job and relaunch it when its instance is lost.")
@click.argument("job_id", metavar="JOB")
@click.option("--instance", "instance_id", metavar="INSTANCE_ID",
              help="The instance the job runs on (default: from the job's status in the store).")
@click.option("--keep", is_flag=True, help="Leave the last instance running when the job ends.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Stop watching after S seconds (exit 1; the job goes on).")
@click.option("--store", metavar="URL", callback=_common.refuse_empty_store,
              help="Job store (default: an s3:// [checkpoint] store, else s3://<[aws] s3_bucket>/runctl).")
@region_option
@output_option
@pass_app
def watch(app, job_id, instance_id, keep, timeout, store, region):
    """Follow JOB's output and keep it running: on a spot notice or a lost instance, launch a
    replacement and resume the job there from its latest snapshot."""
    from runctl.agent.status import read_status
    from runctl.store import open_store

    job_store = open_store(aws_store_url(app, store))
    status = read_status(job_store, job_id)
    instance_id = instance_id or current_instance(job_store, job_id)
    if instance_id is None:
        raise UsageError(f"job {job_id} has no instance in {job_store.url} yet; give --instance")
    app.output.note(f"runctl: watching job {job_id} on {instance_id} (Ctrl-C stops watching, not the job)")
    first = max(0, len(status.attempts) - 1) if status is not None else 0
    outcome = control(app, job_store, job_id, instance_id, region=region, first_attempt=first, keep=keep,
                      timeout=timeout)
    warnings = ended_warnings(job_store, job_id, outcome.state)
    code = report_outcome(app, outcome, {"job_id": job_id, "store": job_store.url, "warnings": list(warnings)})
    show_warnings(app, warnings)
    click.get_current_context().exit(code)
