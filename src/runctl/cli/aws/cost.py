"""``runctl aws cost``: what a job's attempts cost on EC2 and what on-demand would have cost."""

from __future__ import annotations

import time

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import aws_session, region_option, store_url
from runctl.errors import CloudError, UsageError

LIVE = ("pending", "running", "restarting")


def _attempt_costs(ec2, status, assumed_type: str | None, on_demand_price: float | None):
    from runctl.backends.aws.cost import attempt_cost

    now = time.time()
    costs, notes = [], []
    for a in status.attempts:
        end = a.ended or (now if status.state in LIVE and a is status.attempts[-1] else status.heartbeat or now)
        itype, az, lifecycle, note = a.instance_type, a.az, None, ""
        if a.instance_id:
            try:
                info = ec2.describe(a.instance_id)
                itype, az, lifecycle = itype or info.instance_type, az or info.az, info.lifecycle
            except CloudError as exc:
                note = f"{exc}; assumed spot"
        if not itype:
            if not assumed_type:
                notes.append(f"attempt {a.number} names no EC2 instance (ran elsewhere?); not counted")
                continue
            itype, note = assumed_type, "; ".join(filter(None, [note, f"assumed {assumed_type}"]))
        lifecycle = lifecycle or "spot"
        history = ec2.spot_price_history(itype, a.started, max(end, a.started), az) if lifecycle == "spot" else []
        costs.append(attempt_cost(a.number, a.started, end, itype, instance_id=a.instance_id, az=az,
                                  lifecycle=lifecycle, history=history, on_demand_price=on_demand_price, note=note))
    return costs, notes


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}" if value < 1 else f"${value:,.2f}"


@click.command("cost")
@click.argument("job_id", metavar="JOB")
@_common.store_option(f"{_common.AWS_STORE}, else {_common.LOCAL_STORE}")
@click.option("--instance-type", metavar="TYPE", help="Type to assume for attempts whose status names none.")
@click.option("--on-demand-price", type=click.FloatRange(min=0), metavar="USD",
              help="On-demand USD/hour to compare with (default: a built-in us-east-1 list price).")
@region_option
@output_option
@pass_app
def cost(app, job_id, store, instance_type, on_demand_price, region):
    """Spend of JOB: spot price history over each attempt's run time, and the saving
    against on-demand."""
    from runctl.backends.aws.cost import job_cost
    from runctl.backends.aws.ec2 import Ec2
    from runctl.store import open_store

    session = aws_session(app, region)
    url = store or store_url(app, None) or _common.store_url(app, None)
    job_store = open_store(url, session=session.session) if url.startswith("s3://") else open_store(url)
    status = _common.require_job(job_store, job_id)
    ec2 = Ec2(session.client("ec2"), region=session.region)
    costs, notes = _attempt_costs(ec2, status, instance_type, on_demand_price)
    if not costs:
        raise UsageError(f"job {job_id} has no attempt on an EC2 instance to cost; "
                         "--instance-type TYPE estimates it as if it ran on TYPE")
    result = job_cost(job_id, costs, notes)

    def text() -> None:
        app.output.table(("attempt", "instance", "type", "zone", "market", "hours", "cost", "on-demand", "note"),
                         [(c.attempt, c.instance_id or "-", c.instance_type, c.az or "-", c.lifecycle,
                           f"{c.hours:.2f}", _money(c.cost_usd), _money(c.on_demand_usd), c.note)
                          for c in result.attempts])
        line = f"job {job_id}: {_money(result.total_usd)}"
        if result.saving_usd is not None:
            line += (f", on-demand {_money(result.on_demand_usd)}, saved {_money(result.saving_usd)}"
                     f" ({result.saving_percent}%)")
        app.output.line(line)
        for note in result.notes:
            app.output.note(f"note: {note}")

    app.output.report(result, text)
