"""runctl aws run SCRIPT: launch an instance, train on it, terminate it (the one-command way).

``runctl aws create --wait`` (for this job), then ``runctl aws train ... --wait``, then
``runctl aws terminate`` unless ``--keep``; the instance is terminated also when the job
fails, the wait times out or Ctrl-C (or SIGTERM) stops it. Exit code: the job's (0, 1, 130).
"""

from __future__ import annotations

import signal

import click

from runctl.cli import _common
from runctl.cli._args import script_args, script_command
from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._docker import prepare_image, with_docker_options
from runctl.cli.aws._jobs import (auto_resume_on, instance_checkpoint_dir, prepare_code, resolve_script, send_job,
                                  wait_and_recover, wait_and_report, with_checkpoint_options, with_code_options)
from runctl.cli.aws._launch import launch_instance
from runctl.cli.aws._pricing import max_price_option
from runctl.cli.aws._shared import aws_store_url
from runctl.errors import EXIT_JOB_FAILED, RunctlError


@script_command(name="run", short_help="Launch an instance, train SCRIPT on it, terminate it.")
@click.option("--instance-type", "-t", metavar="TYPE", help="Instance type (default: [aws] default_instance_type).")
@click.option("--spot/--on-demand", default=None, help="Market (default: [aws] use_spot).")
@max_price_option
@with_code_options
@with_checkpoint_options
@with_docker_options
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Give up waiting for the job after S seconds (exit 1).")
@click.option("--keep", is_flag=True, help="Leave the instance running afterwards.")
@click.option("--auto-resume/--no-auto-resume", default=None,
              help="Relaunch the job on a new instance when its instance is reclaimed or lost "
                   "(default: [aws] auto_resume / RUNCTL_AUTO_RESUME).")
@click.option("--store", metavar="URL", callback=_common.refuse_empty_store,
              help="Job store (default: an s3:// [checkpoint] store, else s3://<[aws] s3_bucket>/runctl).")
@click.option("--region", metavar="REGION", help="AWS region (default: [aws] region / AWS_REGION).")
@output_option
@pass_app
@click.pass_context
def run(ctx, app, script, instance_type, spot, max_price_per_hour, sync_code, includes, job_id, checkpoint_dir,
        resume_args, no_docker, docker_image, timeout, keep, auto_resume, store, region):
    """Launch an instance, run SCRIPT (a file of the project, or a job NAME of .runctl.toml)
    on it with the project's code, then terminate it.

    \b
    Its arguments go after --:
        runctl aws run training/train.py -t g5.xlarge -- --steps 5000
    A job's keys (instance_type, spot, max_price_per_hour ...) are defaults the options override.
    """
    from runctl.store import open_store

    named = resolve_script(app, script, script_args())
    job = named.job
    folder = instance_checkpoint_dir(app, named, checkpoint_dir)
    job_store = open_store(aws_store_url(app, store))
    job_id = _common.resolve_job_id(job_store, job_id, named.script, named.args)
    image = prepare_image(app, no_docker=no_docker, docker_image=docker_image, region=region)  # before paying, too
    sync_code = image is None if sync_code is None else sync_code
    prepared = prepare_code(app, job_store, named, sync_code, includes, folder)  # before paying for an instance
    instance_id = launch_instance(
        app, instance_type=instance_type or job.instance_type, spot=job.spot if spot is None else spot,
        fallback_types=",".join(job.fallback_instance_types) if job.fallback_instance_types else None,
        job=job_id, store=job_store.url, max_price_per_hour=max_price_per_hour or job.max_price_per_hour,
        wait=True, region=region).instance_id
    app.output.note(f"runctl: launched {instance_id} for job {job_id}")
    code = EXIT_JOB_FAILED
    stop_as_ctrl_c = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # a CI timeout, `timeout`, kill
    try:
        sent = send_job(app, job_store, instance_id, named, job_id=job_id, checkpoint_dir=folder,
                        resume_args=named.resume_args(resume_args), prepared=prepared, image=image)
        if auto_resume_on(app, auto_resume):
            code = wait_and_recover(app, job_store, sent, region=region, keep=keep, timeout=timeout, job=job)
        else:
            code = wait_and_report(app, job_store, sent, timeout=timeout)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        try:
            _finish(app, [instance_id, *_replacements(job_store, job_id)], region, keep)
        finally:
            signal.signal(signal.SIGTERM, stop_as_ctrl_c)
    ctx.exit(code)


def _raise_keyboard_interrupt(_signum, _frame) -> None:
    """SIGTERM ends `aws run` as Ctrl-C does: its instances are terminated on the way out."""
    raise KeyboardInterrupt


def _replacements(job_store, job_id: str) -> list[str]:
    """The instances auto-resume launched for the job (terminated with the first one)."""
    from runctl.resume.records import read_recoveries

    try:
        return list(read_recoveries(job_store, job_id)[0].get("instances", ()))
    except RunctlError:
        return []


def _finish(app, instance_ids: list[str], region: str | None, keep: bool) -> None:
    from runctl.cli.aws._shared import ec2

    client = None
    for instance_id in instance_ids:
        try:
            client = client or ec2(app, region)
            info = client.describe(instance_id)
            if info.state in ("shutting-down", "terminated"):
                continue
            if keep:
                app.output.note(f"runctl: kept {instance_id}; terminate it with: runctl aws terminate {instance_id}")
                continue
            client.terminate(instance_id)
            app.output.note(f"runctl: terminated {instance_id}")
        except RunctlError as exc:
            app.output.error(f"could not terminate {instance_id}: {exc}; terminate it with: "
                             f"runctl aws terminate {instance_id}")
