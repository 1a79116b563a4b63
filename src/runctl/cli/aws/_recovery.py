"""Following a job on AWS with the recovery controller (``runctl.resume.controller``): what
``aws watch``, ``aws train --auto-resume`` and ``aws run --auto-resume`` share."""

from __future__ import annotations

import sys
from pathlib import Path

from runctl.cli.aws._shared import aws_session
from runctl.errors import EXIT_INTERRUPTED, EXIT_JOB_FAILED

EXIT_BY_STATE = {"completed": 0, "stopped": EXIT_INTERRUPTED, "cancelled": EXIT_INTERRUPTED}


class LogFollower:
    """Writes the job's new log chunks (attempts from ``first_attempt`` on) to ``sink``."""

    def __init__(self, store, job_id: str, first_attempt: int, sink) -> None:
        self.store, self.job_id, self.first_attempt, self.sink = store, job_id, first_attempt, sink
        self.shown: set[str] = set()

    def __call__(self) -> None:
        from runctl.agent.logs import attempts_with_logs, log_chunks

        for number in attempts_with_logs(self.store, self.job_id):
            if number < self.first_attempt:
                continue
            for key in log_chunks(self.store, self.job_id, number):
                if key not in self.shown:
                    self.shown.add(key)
                    self.sink.write(self.store.read(key).data)
                    self.sink.flush()


def replacement_specs(app, session, job_store, job_id: str, fallback_types: tuple[str, ...] | None = None):
    """A function: the instance to replace (InstanceInfo, or None when EC2 lost it) -> the
    LaunchSpec of its replacement: same type, image, market and subnet first, then the
    fallback types (default: [aws] fallback_instance_types) and subnets; the user data of
    ``aws create`` (made once)."""
    from runctl.backends.aws.instance_types import parse_types
    from runctl.backends.aws.launch import LaunchSpec
    from runctl.cli.aws._launch import default_image, user_data_for

    config = app.config.aws
    user_data = user_data_for(app, job_store, session.region, job=job_id)
    user = session.user_name()
    fallbacks = parse_types(",".join(config.fallback_instance_types if fallback_types is None else fallback_types))

    def spec_for(old) -> LaunchSpec:
        first = (old.instance_type,) if old is not None else parse_types(config.default_instance_type)
        subnets = config.subnet_ids
        if subnets and old is not None and old.subnet_id:
            subnets = tuple(dict.fromkeys((old.subnet_id, *subnets)))
        image = (old.image_id if old is not None and old.image_id else None) or config.ami \
            or default_image(session, first[0])
        return LaunchSpec(
            image_id=image, instance_types=tuple(dict.fromkeys(first + fallbacks)),
            spot=(old.lifecycle == "spot") if old is not None else config.use_spot, subnet_ids=subnets,
            security_group_ids=config.security_group_ids, key_name=config.key_name,
            iam_instance_profile=config.iam_instance_profile, user_data=user_data,
            spot_max_price=config.spot_max_price, job=job_id,
            project=(old.tags.get("runctl:project") if old is not None else None) or Path.cwd().name,
            user=user, name=(old.tags.get("Name", "") if old is not None else ""), idempotency_key="",
        )

    return spec_for


def control(app, job_store, job_id: str, instance_id: str, *, region: str | None, first_attempt: int = 0,
            keep: bool = False, timeout: float | None = None, max_restarts: int | None = None,
            fallback_types: tuple[str, ...] | None = None):
    """Follow the job, recovering it on new instances; returns the controller's Outcome.
    ``max_restarts``: relaunches allowed (default: [aws] max_restarts); ``fallback_types``:
    the types tried after the lost one's (default: [aws] fallback_instance_types)."""
    from runctl.backends.aws.provision import Provisioner
    from runctl.resume.controller import RecoveryController

    session = aws_session(app, region)
    provisioner = Provisioner(session.client("ec2"), region=session.region)
    sink = sys.stderr.buffer if app.output.is_json else sys.stdout.buffer
    controller = RecoveryController(
        job_store, job_id, instance_id, ec2=provisioner.ec2, provisioner=provisioner,
        launch_spec=replacement_specs(app, session, job_store, job_id, fallback_types),
        max_restarts=app.config.aws.max_restarts if max_restarts is None else max_restarts,
        first_attempt=first_attempt, keep=keep, timeout=timeout,
        on_poll=LogFollower(job_store, job_id, first_attempt, sink),
        on_event=lambda message: app.output.note(f"runctl: {message}"),
    )
    return controller.run()


def report_outcome(app, outcome, report: dict) -> int:
    """Print the outcome's line (or JSON) and return the exit code for it."""
    line = f"runctl: job {report['job_id']} {outcome.state}" + (f": {outcome.message}" if outcome.message else "")
    if outcome.recoveries:
        line += f" ({outcome.recoveries} recover{'y' if outcome.recoveries == 1 else 'ies'}, last on " \
                f"{outcome.instance_id})"
    app.output.report({**report, "state": outcome.state, "message": outcome.message,
                       "recoveries": outcome.recoveries, "instance_id": outcome.instance_id,
                       "launched": outcome.launched}, lambda: app.output.note(line))
    return EXIT_BY_STATE.get(outcome.state, EXIT_JOB_FAILED)


def current_instance(job_store, job_id: str) -> str | None:
    """Where the job runs now: the last relaunch, else its last attempt's instance, else the
    instance assigned to it most recently."""
    from runctl.agent.status import read_status
    from runctl.resume.records import read_recoveries

    book, _ = read_recoveries(job_store, job_id)
    if book.get("current"):
        return book["current"]
    status = read_status(job_store, job_id)
    if status is not None and status.attempts and status.attempts[-1].instance_id:
        return status.attempts[-1].instance_id
    return None
