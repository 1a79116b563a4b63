"""``runctl aws create``: launch one tagged instance (spot by default) with the runctl bootstrap."""

from __future__ import annotations

import click

from runctl.cli import _common
from runctl.cli._context import App, pass_app
from runctl.cli.aws._launch import launch_instance
from runctl.cli.aws._pricing import max_price_option
from runctl.cli.aws._shared import describe_text, region_option

OUTPUTS = ("text", "json", "instance-id")


def _output_choice(ctx: click.Context, _param, value):
    if value in ("text", "json"):
        ctx.ensure_object(App).output.format = value
    return value


@click.command("create")
@click.option("--instance-type", "-t", metavar="TYPE", help="Instance type (default: [aws] default_instance_type).")
@click.option("--spot/--on-demand", default=None, help="Market (default: [aws] use_spot).")
@click.option("--fallback-types", metavar="T2,T3", help="Types to try next when the first has no capacity "
                                                         "(default: [aws] fallback_instance_types).")
@click.option("--subnet-id", "subnet_ids", multiple=True, metavar="SUBNET",
              help="Subnet to launch in; repeat for failover across zones (default: [aws] subnet_ids).")
@click.option("--ami", metavar="AMI", help="Image (default: [aws] ami, else a current Deep Learning / AL2023 AMI).")
@click.option("--job", default="", metavar="JOB", help="The job the instance is for (its runctl:job tag).")
@click.option("--name", default="", help="The Name tag (default: runctl-JOB or runctl-PROJECT).")
@_common.store_option(_common.AWS_STORE)
@click.option("--idempotency-key", metavar="KEY",
              help="Same key and same request: the same launch (at most once in 24 h). Default: a fresh one.")
@max_price_option
@click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), metavar="MINUTES",
              help="Shut the instance down after MINUTES without a job (default: [aws] idle_timeout, 60).")
@click.option("--no-idle-timeout", is_flag=True, help="Keep the instance running without a job until you stop it.")
@click.option("--wait", is_flag=True, help="Return once the instance is running.")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds --wait waits.")
@click.option("--output", "-o", "output_format", type=click.Choice(OUTPUTS), default=None, is_eager=True,
              callback=_output_choice, help="text, json, or instance-id (the bare id, for $(...)).")
@region_option
@pass_app
def create(app, instance_type, spot, fallback_types, subnet_ids, ami, job, name, store, idempotency_key,
           max_price_per_hour, idle_timeout, no_idle_timeout, wait, timeout, output_format, region):
    """Launch one instance for training: IMDSv2 only, tagged runctl:job/project/user/created.

    \b
    Spot by default, through an instant EC2 Fleet per instance type across the subnets
    given; a type without capacity moves on to the next of --fallback-types.
        runctl aws create --instance-type g5.xlarge --fallback-types g6.xlarge,g4dn.xlarge --wait
        ID=$(runctl aws create --output instance-id)
    """
    info = launch_instance(app, instance_type=instance_type, spot=spot, fallback_types=fallback_types,
                           subnet_ids=subnet_ids, ami=ami, job=job, name=name, store=store,
                           idempotency_key=idempotency_key, max_price_per_hour=max_price_per_hour, wait=wait,
                           timeout=timeout, region=region,
                           idle_timeout_s=_idle_seconds(app, idle_timeout, no_idle_timeout))
    if output_format == "instance-id":
        app.output.line(info.instance_id)
        return
    app.output.report(info, lambda: app.output.line(f"launched {describe_text(info)}"))


def _idle_seconds(app, minutes: float | None, never: bool) -> float | None:
    """The agent's idle timeout in seconds; None: none."""
    if never:
        if minutes is not None:
            raise click.UsageError("give --idle-timeout or --no-idle-timeout, not both")
        return None
    minutes = app.config.aws.idle_timeout if minutes is None else minutes
    return minutes * 60.0 if minutes > 0 else None
