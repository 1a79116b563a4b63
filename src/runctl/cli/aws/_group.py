"""Submitting a job in its own Auto Scaling group and following it: what ``aws run`` and
``aws watch`` share. The job lives on AWS (``runctl.jobs``); following it only reads the store,
so Ctrl-C, SIGTERM or a closed laptop stop the following, never the job."""

from __future__ import annotations

import signal

from runctl.errors import EXIT_INTERRUPTED, EXIT_JOB_FAILED

EXIT_BY_STATE = {"completed": 0, "stopped": EXIT_INTERRUPTED}


def group_rules(app, job, auto_resume: bool):
    """The job's group rules from its job table and [aws]."""
    from runctl.jobs.submit import GroupRules

    config = app.config.aws
    return GroupRules(auto_resume=auto_resume,
                      max_restarts=config.max_restarts if job.max_restarts is None else job.max_restarts,
                      max_boot_failures=config.max_boot_failures, boot_timeout_s=config.boot_timeout)


def group_user_data(app, store, region: str, job_id: str) -> str:
    """The bootstrap of the job's group instances: their agent runs the job; the boot
    watchdog ends an instance whose agent never starts."""
    from runctl.backends.aws.bootstrap import bootstrap_user_data

    if store is None:
        from runctl.errors import UsageError

        raise UsageError("no S3 store for the job: set [aws] s3_bucket in .runctl.toml or give --store s3://BUCKET/PREFIX")
    return bootstrap_user_data(store, region=region, job=job_id, boot_timeout_s=app.config.aws.boot_timeout)


def submit(app, job_store, spec, *, job, instance_type, spot, max_price_per_hour, region, auto_resume: bool):
    """Create the job's group for ``spec``; the ``runctl.jobs.submit.Submitted``."""
    from runctl.backends.aws.job_group import JobGroups
    from runctl.cli.aws._launch import launch_spec
    from runctl.jobs.submit import submit_group_job

    session, launch, _ = launch_spec(
        app, instance_type=instance_type or job.instance_type, spot=job.spot if spot is None else spot,
        fallback_types=",".join(job.fallback_instance_types) if job.fallback_instance_types else None,
        job=spec.job_id, store=job_store.url, max_price_per_hour=max_price_per_hour or job.max_price_per_hour,
        region=region, user_data=lambda store, where: group_user_data(app, store, where, spec.job_id))
    submitted = submit_group_job(job_store, JobGroups.for_session(session), spec, launch,
                                 group_rules(app, job, auto_resume), subnet_ids=launch.subnet_ids)
    group = submitted.group
    market = "spot" if group.spot else "on-demand"
    app.output.note(f"runctl: job {spec.job_id} submitted: Auto Scaling group {group.name} ({market} "
                    f"{', '.join(group.instance_types)} in {len(group.subnet_ids)} subnet(s)); it runs"
                    f"{', resumes' if auto_resume else ''} and ends on AWS, without this terminal")
    return submitted


def follow(app, job_store, job_id: str, *, first_attempt: int, timeout: float | None, report: dict) -> int:
    """Follow the job to its end (or ``timeout``), report it; the exit code. Ctrl-C or
    SIGTERM stop the following only, with exit code 130."""
    from runctl.cli.aws._jobs import ended_warnings, show_warnings
    from runctl.jobs.follow import follow_group_job

    app.output.note(f"runctl: following job {job_id} (Ctrl-C stops following, not the job; "
                    f"runctl aws watch {job_id} follows again, runctl aws cancel {job_id} stops it)")
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        result = follow_group_job(job_store, job_id, first_attempt=first_attempt, sink=app.output.job_output,
                                  note=app.output.note, timeout=timeout)
    except KeyboardInterrupt:
        app.output.note(f"runctl: stopped following job {job_id}; it goes on on AWS: runctl aws watch {job_id}")
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    warnings = ended_warnings(job_store, job_id, result.state)
    recoveries = (f" ({result.recoveries} recover{'y' if result.recoveries == 1 else 'ies'})"
                  if result.recoveries else "")
    line = f"runctl: job {job_id} {result.state}{recoveries}" + (f": {result.message}" if result.message else "")
    app.output.report({**report, "state": result.state, "message": result.message, "recoveries": result.recoveries,
                       "instance_id": result.instance_id, "warnings": list(warnings)},
                      lambda: app.output.note(line))
    show_warnings(app, warnings)
    return EXIT_BY_STATE.get(result.state, EXIT_JOB_FAILED)


def _raise_keyboard_interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt
