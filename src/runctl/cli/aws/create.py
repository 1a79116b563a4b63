"""``runctl aws create``: launch one tagged instance (spot by default) with the runctl bootstrap."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import click

from runctl.cli._context import App, pass_app
from runctl.cli.aws._pricing import affordable_types, max_price_option
from runctl.cli.aws._shared import aws_session, describe_text, region_option
from runctl.errors import UsageError

log = logging.getLogger(__name__)

OUTPUTS = ("text", "json", "instance-id")


def _output_choice(ctx: click.Context, _param, value):
    if value in ("text", "json"):
        ctx.ensure_object(App).output.format = value
    return value


def store_url(app, explicit: str | None) -> str | None:
    """The job store the instance's agent uses (the rule of ``bootstrap.store_url_for``: --store,
    an s3:// [checkpoint] store, else s3://<[aws] s3_bucket>/runctl); None when nothing names one."""
    configured = app.config.checkpoint.store
    if not (explicit or (configured and configured.startswith("s3://")) or app.config.aws.s3_bucket):
        return None
    from runctl.backends.aws.bootstrap import store_url_for

    url = store_url_for(app.config.aws.s3_bucket, explicit, configured)
    if not url.startswith("s3://"):
        raise UsageError(f"the instance reaches its store over S3: give --store s3://BUCKET/PREFIX, not {url!r}")
    return url


def minimal_user_data(store: str | None, job: str) -> str:
    """A script that only records what the instance is for (no agent, no credentials)."""
    import shlex

    return ("#!/bin/bash\n# runctl: instance without the runctl agent (no bootstrap available)\n"
            f"echo runctl job={shlex.quote(job)} store={shlex.quote(store or '')} > /var/log/runctl-bootstrap.log\n")


def user_data_for(app, store, region: str, *, job: str = "") -> str:
    """The user data: the runctl bootstrap (runctl.backends.aws.bootstrap) when there is a
    store to publish the wheel in, else ``minimal_user_data``. ``store`` is an opened Store."""
    if store is None:
        app.output.note("no S3 store configured ([aws] s3_bucket or --store): the instance starts without "
                        "the runctl agent")
        return minimal_user_data(None, job)
    try:
        from runctl.backends.aws.bootstrap import bootstrap_user_data
    except ModuleNotFoundError as exc:
        if exc.name != "runctl.backends.aws.bootstrap":
            raise
        return minimal_user_data(store.url, job)
    return bootstrap_user_data(store, region=region)


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
@click.option("--store", metavar="URL", help="Job store for the agent (default: s3://<[aws] s3_bucket>/runctl).")
@click.option("--idempotency-key", metavar="KEY",
              help="Same key and same request: the same launch (at most once in 24 h). Default: a fresh one.")
@max_price_option
@click.option("--wait", is_flag=True, help="Return once the instance is running.")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds --wait waits.")
@click.option("--output", "-o", "output_format", type=click.Choice(OUTPUTS), default=None, is_eager=True,
              callback=_output_choice, help="text, json, or instance-id (the bare id, for $(...)).")
@region_option
@pass_app
def create(app, instance_type, spot, fallback_types, subnet_ids, ami, job, name, store, idempotency_key,
           max_price_per_hour, wait, timeout, output_format, region):
    """Launch one instance for training: IMDSv2 only, tagged runctl:job/project/user/created.

    \b
    Spot by default, through an instant EC2 Fleet per instance type across the subnets
    given; a type without capacity moves on to the next of --fallback-types.
        runctl aws create --instance-type g5.xlarge --fallback-types g6.xlarge,g4dn.xlarge --wait
        ID=$(runctl aws create --output instance-id)
    """
    from runctl.backends.aws.instance_types import parse_types
    from runctl.backends.aws.launch import LaunchSpec
    from runctl.backends.aws.provision import Provisioner
    from runctl.store import open_store
    from runctl.store.layout import JOB_ID_PATTERN

    config = app.config.aws
    if job and not JOB_ID_PATTERN.match(job):
        raise click.BadParameter(f"{job!r}: letters, digits, '.', '_' and '-' (at most 128)", param_hint="--job")
    types = parse_types(instance_type or config.default_instance_type)
    fallbacks = parse_types(fallback_types) if fallback_types is not None else parse_types(
        ",".join(config.fallback_instance_types))
    all_types = tuple(dict.fromkeys(types + fallbacks))
    session = aws_session(app, region)
    provisioner = Provisioner(session.client("ec2"), region=session.region)
    provisioner.ec2.check_instance_types(all_types)
    url = store_url(app, store)
    job_store = None
    if url:
        job_store = open_store(url, session=session.session)
        job_store.list_dirs("")  # a missing bucket fails here, with the store's message
    if job_store is not None and not config.iam_instance_profile:
        app.output.note("no [aws] iam_instance_profile: the agent on the instance cannot reach the store "
                        "(runctl aws setup makes a profile and records it)")
    use_spot = config.use_spot if spot is None else spot
    all_types = affordable_types(app, session, all_types, spot=use_spot, max_price=max_price_per_hour)
    image = ami or config.ami or default_image(session, all_types[0])
    spec = LaunchSpec(
        image_id=image, instance_types=all_types, spot=use_spot,
        subnet_ids=tuple(subnet_ids) or config.subnet_ids, security_group_ids=config.security_group_ids,
        key_name=config.key_name, iam_instance_profile=config.iam_instance_profile,
        user_data=user_data_for(app, job_store, session.region, job=job),
        spot_max_price=_spot_bid(config.spot_max_price, max_price_per_hour),
        job=job, project=Path.cwd().name, user=session.user_name(), name=name,
        idempotency_key=idempotency_key or uuid.uuid4().hex,
    )
    info = provisioner.create_instance(spec)
    for refused in provisioner.skipped:
        app.output.note(f"no capacity: {refused}; tried the next")
    if wait:
        info = provisioner.ec2.wait_running(info.instance_id, timeout=timeout)
    if output_format == "instance-id":
        app.output.line(info.instance_id)
        return
    app.output.report(info, lambda: app.output.line(f"launched {describe_text(info)}"))


def _spot_bid(configured: float | None, max_price_per_hour: float | None) -> float | None:
    """The spot bid: the lower of [aws] spot_max_price and --max-price-per-hour, so that the
    limit holds while the instance runs too."""
    bids = [p for p in (configured, max_price_per_hour) if p is not None]
    return min(bids) if bids else None


def default_image(session, instance_type: str) -> str:
    """A current AMI for the type from AWS's public SSM parameters (Deep Learning Base AMI for
    NVIDIA GPU types, else Amazon Linux 2023)."""
    from botocore.exceptions import ClientError

    from runctl.backends.aws.instance_types import ami_parameters
    from runctl.backends.aws.session import error_code, translate

    names = ami_parameters(instance_type)
    with translate(f"look up a current AMI ({names[-1]})", region=session.region, permission="ssm:GetParameter"):
        for name in names:
            try:
                return session.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
            except ClientError as exc:
                if error_code(exc) != "ParameterNotFound" or name == names[-1]:
                    raise
                log.warning("no public parameter %s in %s; trying the next", name, session.region)
    raise AssertionError("unreachable")
