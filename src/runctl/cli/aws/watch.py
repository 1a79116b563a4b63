"""runctl aws watch JOB: follow a job on AWS from any machine, to its end.

Streams the job's output from the store and says when an instance of it was reclaimed and
where it resumed; exits with the job's exit code (0, 1, 130). It only reads: the job's group
and agents keep it running and end it (``runctl aws run``), so Ctrl-C stops the watching,
never the job. A job sent to an instance with ``aws train`` is followed until its agent
finishes it.
"""

from __future__ import annotations

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import aws_store_url
from runctl.errors import UsageError


@click.command("watch", short_help="Follow a job on AWS to its end (from any machine).")
@click.argument("job_id", metavar="JOB")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Stop watching after S seconds (exit 1; the job goes on).")
@click.option("--store", metavar="URL", callback=_common.refuse_empty_store,
              help="Job store (default: an s3:// [checkpoint] store, else s3://<[aws] s3_bucket>/runctl).")
@output_option
@pass_app
def watch(app, job_id, timeout, store):
    """Follow JOB's output until it ends, with its recoveries; exit with its exit code."""
    from runctl.agent.group_record import read_group
    from runctl.agent.status import read_status
    from runctl.cli.aws._group import follow
    from runctl.store import open_store

    job_store = open_store(aws_store_url(app, store))
    status = read_status(job_store, job_id)
    first = max(0, len(status.attempts) - 1) if status is not None else 0
    report = {"job_id": job_id, "store": job_store.url}
    if read_group(job_store, job_id) is not None:
        click.get_current_context().exit(follow(app, job_store, job_id, first_attempt=first, timeout=timeout,
                                                report=report))
    if status is None:
        raise UsageError(f"no job {job_id} in {job_store.url}; runctl jobs lists them")
    click.get_current_context().exit(_follow_on_instance(app, job_store, job_id, status, first, timeout))


def _follow_on_instance(app, job_store, job_id: str, status, first: int, timeout: float | None) -> int:
    """A job ``aws train`` sent to an instance: follow its assignment there."""
    from runctl.agent.assignment import read_assignment
    from runctl.cli.aws._jobs import SentJob, wait_and_report

    instance_id = status.attempts[-1].instance_id if status.attempts else None
    found = read_assignment(job_store, instance_id) if instance_id else None
    if found is None or found[0].job_id != job_id:
        raise UsageError(f"job {job_id} runs on no instance now (its state: {status.state}); resume it with "
                         f"runctl aws run ... --job-id {job_id}")
    sent = SentJob(job_id, instance_id, found[0].assignment_id, first, {"job_id": job_id, "store": job_store.url,
                                                                      "instance_id": instance_id})
    return wait_and_report(app, job_store, sent, timeout=timeout)
