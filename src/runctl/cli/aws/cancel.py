"""runctl aws cancel JOB: stop a job for good and leave nothing of it running, from any machine.

Marks the job cancelled in the store (``jobs/<id>/cancel.json``): its agent stops the script
(signal, grace, final snapshot) and deletes the job's group; a replacement that boots
meanwhile ends the group instead of starting the job. Once that happened, or after
``--timeout`` (no agent may run: a replacement still booting, a lost instance), the group
and its launch template are deleted here. Last, every instance still tagged
``runctl:job=JOB`` is terminated, and the job is recorded as stopped.
"""

from __future__ import annotations

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import aws_store_url, region_option


@click.command("cancel", short_help="Cancel a job: stop it, delete its group, leave nothing running.")
@click.argument("job_id", metavar="JOB")
@click.option("--timeout", type=click.FloatRange(min=0), default=150.0, show_default=True, metavar="S",
              help="How long the job's agent has to stop the script and save before its group is deleted "
                   "(its final snapshot may then be cut short).")
@click.option("--store", metavar="URL", callback=_common.refuse_empty_store,
              help="Job store (default: an s3:// [checkpoint] store, else s3://<[aws] s3_bucket>/runctl).")
@region_option
@output_option
@pass_app
def cancel(app, job_id, timeout, store, region):
    """Cancel JOB: its agent stops it and saves, its group is deleted, its instances end."""
    from runctl.backends.aws.job_group import JobGroups
    from runctl.cli.aws._shared import aws_session, compute
    from runctl.jobs.cancel import cancel_job
    from runctl.store import open_store

    job_store = open_store(aws_store_url(app, store))
    result = cancel_job(job_store, job_id, lambda where: JobGroups.for_session(aws_session(app, where or region)),
                        compute(app, region), timeout=timeout,
                        waiting=lambda: app.output.note(f"runctl: job {job_id} marked cancelled; waiting up to "
                                                        f"{timeout:g}s for its agent to stop it and save"))
    terminated, saved = list(result.terminated), result.stopped_by_agent
    report = {"job_id": job_id, "cancelled": True, "terminated": terminated, "stopped_by_agent": saved}
    how = {True: "; its agent stopped it and saved", False: "; its group was deleted before an agent stopped it",
           None: ""}[saved]
    app.output.report(report, lambda: app.output.line(
        f"job {job_id} cancelled{how}" + (f"; terminated {', '.join(terminated)}" if terminated else
                                          "; nothing of it is running")))
