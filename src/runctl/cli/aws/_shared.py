"""What the ``runctl aws`` commands share: the region, the session, rendering an instance."""

from __future__ import annotations

import os

import click

from runctl.models import InstanceInfo

region_option = click.option(
    "--region", metavar="REGION",
    help="AWS region (default: [aws] region when set, else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1).")

instance_argument = click.argument("instance_id", metavar="INSTANCE_ID")


def resolve_region(app, explicit: str | None) -> str:
    """--region, then [aws] region when the config sets it, then the AWS variables, then the default."""
    if explicit:
        return explicit
    config = app.config
    if config.origins.get("aws.region", "default") != "default":
        return config.aws.region
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or config.aws.region


def aws_session(app, region: str | None):
    """An AwsSession for the region (checked before any request)."""
    from runctl.backends.aws.session import AwsSession

    return AwsSession(resolve_region(app, region))


def ec2(app, region: str | None):
    from runctl.backends.aws.ec2 import Ec2

    session = aws_session(app, region)
    return Ec2(session.client("ec2"), region=session.region)


def describe_text(info: InstanceInfo) -> str:
    """One line for a person: id, state, type, market, zone, addresses, job."""
    parts = [info.instance_id, info.state, info.instance_type, info.lifecycle, info.az]
    if info.public_ip or info.private_ip:
        parts.append(" / ".join(filter(None, [info.public_ip, info.private_ip])))
    if info.job_id:
        parts.append(f"job {info.job_id}")
    return "  ".join(p for p in parts if p)


def report_instance(app, info: InstanceInfo, verb: str = "") -> None:
    app.output.report(info, lambda: app.output.line(f"{verb}{describe_text(info)}"))
