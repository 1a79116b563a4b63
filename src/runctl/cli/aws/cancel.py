"""runctl aws cancel JOB: stop a job for good and leave nothing of it running.

Marks the job cancelled in the store (``jobs/<id>/cancel.json``: agents stop it, controllers
stop relaunching it, a replacement's agent does not start it), terminates every instance
tagged ``runctl:job=JOB`` and every instance a controller launched for it (looking again for a
few seconds, for a launch in flight), and records the job as stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import aws_store_url, region_option
from runctl.errors import RunctlError

SETTLE_S = 3.0  # how long to look again for instances launched while cancelling


@click.command("cancel", short_help="Cancel a job: stop relaunching it and terminate its instances.")
@click.argument("job_id", metavar="JOB")
@click.option("--store", metavar="URL", callback=_common.refuse_empty_store,
              help="Job store (default: an s3:// [checkpoint] store, else s3://<[aws] s3_bucket>/runctl).")
@region_option
@output_option
@pass_app
def cancel(app, job_id, store, region):
    """Cancel JOB: its agents stop it, no controller relaunches it, its instances are terminated."""
    from runctl.agent.cancellation import mark_cancelled
    from runctl.agent.status import read_status
    from runctl.cli.aws._shared import ec2 as make_ec2
    from runctl.resume.records import read_recoveries
    from runctl.store import layout, open_store

    job_store = open_store(aws_store_url(app, store))
    mark_cancelled(job_store, job_id)
    ec2 = make_ec2(app, region)
    terminated: list[str] = []
    settle_until = time.monotonic() + SETTLE_S
    while True:
        book, _ = read_recoveries(job_store, job_id)
        status = read_status(job_store, job_id)
        known = set(book.get("instances", ()))
        if status is not None:
            known.update(a.instance_id for a in status.attempts if a.instance_id)
        doomed = [i.instance_id for i in ec2.terminate_tagged(job=job_id)]
        for instance_id in sorted(known - set(doomed)):
            try:
                info = ec2.describe(instance_id)
                if info.state not in ("shutting-down", "terminated"):
                    ec2.terminate(instance_id)
                    doomed.append(instance_id)
            except RunctlError as exc:  # not ours (no runctl tag) or gone: say so, go on
                app.output.note(f"runctl: {instance_id}: {exc}")
        terminated += [i for i in doomed if i not in terminated]
        if time.monotonic() >= settle_until:
            break
        time.sleep(0.5)
    status = read_status(job_store, job_id)
    if status is not None and status.state not in ("completed", "failed", "stopped"):
        stopped = dataclasses.replace(status, state="stopped", message="cancelled (runctl aws cancel)")
        job_store.write(layout.status_key(job_id), json.dumps(stopped.to_dict(), indent=1, sort_keys=True).encode())
    report = {"job_id": job_id, "cancelled": True, "terminated": terminated}
    app.output.report(report, lambda: app.output.line(
        f"job {job_id} cancelled" + (f"; terminated {', '.join(terminated)}" if terminated else
                                     "; no instance of it was running")))
