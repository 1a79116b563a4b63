"""Launching instances for jobs: what ``aws create``, ``aws run`` and the recovery of
``aws watch`` share (the user data with the runctl bootstrap, a current AMI)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import click

from runctl.cli.aws._pricing import affordable_types
from runctl.cli.aws._shared import aws_session, store_url

log = logging.getLogger(__name__)


def minimal_user_data(store: str | None, job: str) -> str:
    """A script that only records what the instance is for (no agent, no credentials)."""
    import shlex

    return ("#!/bin/bash\n# runctl: instance without the runctl agent (no bootstrap available)\n"
            f"echo runctl job={shlex.quote(job)} store={shlex.quote(store or '')} > /var/log/runctl-bootstrap.log\n")


def user_data_for(app, store, region: str, *, job: str = "", idle_timeout_s: float | None = None) -> str:
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
    return bootstrap_user_data(store, region=region, idle_timeout_s=idle_timeout_s)


def launch_instance(app, *, instance_type: str | None, spot: bool | None, fallback_types: str | None = None,
                    subnet_ids: tuple[str, ...] = (), ami: str | None = None, job: str = "", name: str = "",
                    store: str | None = None, idempotency_key: str | None = None,
                    max_price_per_hour: float | None = None, wait: bool = False, timeout: float = 600,
                    region: str | None = None, idle_timeout_s: float | None = None):
    """Launch one instance as ``runctl aws create`` does (its options, by name); its InstanceInfo."""
    from runctl.backends.aws.compute import Ec2Compute
    from runctl.backends.instances import wait_for

    session, spec, _ = launch_spec(
        app, instance_type=instance_type, spot=spot, fallback_types=fallback_types, subnet_ids=subnet_ids, ami=ami,
        job=job, name=name, store=store, idempotency_key=idempotency_key, max_price_per_hour=max_price_per_hour,
        region=region, user_data=lambda job_store, where: user_data_for(app, job_store, where, job=job,
                                                                         idle_timeout_s=idle_timeout_s))
    compute = Ec2Compute(session.client("ec2"), region=session.region)
    launched = compute.launch(spec)
    for refused in launched.skipped:
        app.output.note(f"no capacity: {refused}; tried the next")
    if wait:
        return wait_for(compute, launched.instance.instance_id, "running", timeout=timeout)
    return launched.instance


def launch_spec(app, *, instance_type: str | None, spot: bool | None, fallback_types: str | None = None,
                subnet_ids: tuple[str, ...] = (), ami: str | None = None, job: str = "", name: str = "",
                store: str | None = None, idempotency_key: str | None = None,
                max_price_per_hour: float | None = None, region: str | None = None, user_data=None):
    """(session, LaunchSpec, job store) for instances of a job: its types (checked, and
    affordable under ``max_price_per_hour``), market, AMI, subnets and tags, from the options
    and [aws]. ``user_data(job_store, region)`` gives the user data (default: ``user_data_for``)."""
    from runctl.backends.aws.ec2 import Ec2
    from runctl.backends.aws.instance_types import parse_types
    from runctl.backends.aws.launch import LaunchSpec
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
    Ec2(session.client("ec2"), region=session.region).check_instance_types(all_types)
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
    make_user_data = user_data or (lambda opened, where: user_data_for(app, opened, where, job=job))
    spec = LaunchSpec(
        image_id=image, instance_types=all_types, spot=use_spot,
        subnet_ids=tuple(subnet_ids) or config.subnet_ids, security_group_ids=config.security_group_ids,
        key_name=config.key_name, iam_instance_profile=config.iam_instance_profile,
        user_data=make_user_data(job_store, session.region),
        spot_max_price=_spot_bid(config.spot_max_price, max_price_per_hour), job=job, project=Path.cwd().name,
        user=session.user_name(), name=name, idempotency_key=idempotency_key or uuid.uuid4().hex,
    )
    return session, spec, job_store


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
