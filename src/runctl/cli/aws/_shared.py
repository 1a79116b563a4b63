"""What the ``runctl aws`` commands share: the region, the session, the job store, rendering an
instance, running a command on it."""

from __future__ import annotations

import os

import click

from runctl.errors import UsageError
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


def compute(app, region: str | None):
    """The compute contract on EC2 in the region (``runctl.backends.compute``)."""
    from runctl.backends.aws.compute import Ec2Compute

    session = aws_session(app, region)
    return Ec2Compute(session.client("ec2"), region=session.region)


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


def aws_store_url(app, explicit: str | None) -> str:
    """The job store of jobs on AWS: --store, an s3:// [checkpoint] store, else s3://<[aws] s3_bucket>/runctl."""
    from runctl.backends.aws.bootstrap import store_url_for

    return store_url_for(app.config.aws.s3_bucket, explicit, app.config.checkpoint.store)


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


def run_on_instance(app, region: str | None, instance_id: str, script: str, timeout: float):
    """Check the instance runs and is managed by SSM, run ``script``, return the result."""
    from runctl.backends.aws.compute import Ec2Compute
    from runctl.backends.aws.ssm import Ssm
    from runctl.backends.instances import require_running

    session = aws_session(app, region)
    require_running(Ec2Compute(session.client("ec2"), region=session.region), instance_id)
    return Ssm(session.client("ssm"), region=session.region).run(instance_id, script, timeout=timeout)
