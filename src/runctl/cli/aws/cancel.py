"""runctl aws cancel JOB: stop a job for good and leave nothing of it running, from any machine.

Marks the job cancelled in the store (``jobs/<id>/cancel.json``): its agent stops the script
(signal, grace, final snapshot) and deletes the job's group; a replacement that boots
meanwhile ends the group instead of starting the job. Once that happened, or after
``--timeout`` (no agent may run: a replacement still booting, a lost instance), the group
and its launch template are deleted here. Last, every instance still tagged
``runctl:job=JOB`` is terminated, and the job is recorded as stopped.
"""

from __future__ import annotations

import dataclasses
import json

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
    from runctl.agent.cancellation import mark_cancelled
    from runctl.agent.group_record import read_group
    from runctl.agent.status import read_status
    from runctl.cli.aws._shared import aws_session
    from runctl.cli.aws._shared import ec2 as make_ec2
    from runctl.store import layout, open_store

    job_store = open_store(aws_store_url(app, store))
    settings = read_group(job_store, job_id)
    saved = None
    if settings is not None:
        from runctl.backends.aws.job_group import JobGroups
        from runctl.jobs.cancel import cancel_group_job

        app.output.note(f"runctl: job {job_id} marked cancelled; waiting up to {timeout:g}s for its agent to stop "
                        "it and save")
        result = cancel_group_job(job_store, job_id,
                                  lambda where: JobGroups.for_session(aws_session(app, where or region)),
                                  timeout=timeout)
        saved = result.by_agent
    else:
        mark_cancelled(job_store, job_id)
    terminated = [i.instance_id for i in make_ec2(app, region).terminate_tagged(job=job_id)]
    status = read_status(job_store, job_id)
    if status is not None and status.state not in ("completed", "failed", "stopped"):
        stopped = dataclasses.replace(status, state="stopped", message="cancelled (runctl aws cancel)")
        job_store.write(layout.status_key(job_id), json.dumps(stopped.to_dict(), indent=1, sort_keys=True).encode())
    report = {"job_id": job_id, "cancelled": True, "terminated": terminated, "stopped_by_agent": saved}
    how = {True: "; its agent stopped it and saved", False: "; its group was deleted before an agent stopped it",
           None: ""}[saved]
    app.output.report(report, lambda: app.output.line(
        f"job {job_id} cancelled{how}" + (f"; terminated {', '.join(terminated)}" if terminated else
                                          "; nothing of it is running")))
