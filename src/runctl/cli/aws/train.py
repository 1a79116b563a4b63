"""runctl aws train INSTANCE_ID SCRIPT: run a script on an instance's resident agent.

Uploads the project's code (content-addressed: only changed files), writes the job's
job.json and the instance's assignment to the store; the agent on the instance (started by
the bootstrap of ``runctl aws create``) picks it up within a second or so. ``--wait``
follows the job's output from the store and exits with the job's exit code.
"""

from __future__ import annotations

import click

from runctl.cli import _common
from runctl.cli._args import ScriptCommand, script_args
from runctl.cli._context import output_option, pass_app
from runctl.cli._env import with_env_options, with_environment
from runctl.cli.aws._docker import prepare_image, with_docker_options
from runctl.cli._torchrun import nproc_option
from runctl.cli.aws._jobs import (instance_checkpoint_dir, instance_nproc, refuse_nodes, require_running, resolve_script,
                                  send_job,
                                  wait_and_report, with_checkpoint_options, with_code_options)
from runctl.cli.aws._shared import aws_store_url
from runctl.errors import UsageError


def train_command(**kwargs):
    """A ScriptCommand taking INSTANCE_ID before SCRIPT (script arguments after ``--``)."""

    def decorate(func):
        func = click.argument("stray_args", nargs=-1, required=False, metavar="")(func)
        func = click.argument("script", metavar="SCRIPT")(func)
        func = click.argument("instance_id", metavar="INSTANCE_ID")(func)
        return click.command(cls=ScriptCommand, **kwargs)(func)

    return decorate


store_option = click.option("--store", metavar="URL", callback=_common.refuse_empty_store,
                            help="Job store (default: an s3:// [checkpoint] store, else s3://<[aws] s3_bucket>/runctl).")
region_option = click.option("--region", metavar="REGION", help="AWS region (default: [aws] region / AWS_REGION).")


def _refuse_auto_resume(_ctx, _param, value):
    if value:
        raise click.UsageError("--auto-resume runs a job in an Auto Scaling group of its own, which runctl aws run "
                               "makes: use runctl aws run SCRIPT --auto-resume (aws train runs the job on an "
                               "instance you manage, and does not replace it)")
    return value


@train_command(name="train", short_help="Run a script on an instance's runctl agent.")
@with_code_options
@with_checkpoint_options
@with_docker_options
@with_env_options
@nproc_option
# Hidden: a job of several machines needs a group of its own; said in one line, not "no such option".
@click.option("--nodes", type=int, hidden=True)
@click.option("--wait", is_flag=True, help="Follow the job's output and exit with its exit code.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="With --wait: give up after S seconds (exit 1; the job goes on).")
@click.option("--auto-resume", is_flag=True, hidden=True, callback=_refuse_auto_resume, expose_value=False)
@store_option
@region_option
@output_option
@pass_app
def train(app, instance_id, script, sync_code, includes, job_id, checkpoint_dir, resume_args, no_docker, docker_image,
          env, secret, nproc_per_node, nodes, wait, timeout, store, region):
    """Run SCRIPT (a file of the project, or a job NAME of .runctl.toml) on INSTANCE_ID's
    agent, with the project's code; resume it from the store.

    \b
    The project is the current folder. Its arguments go after --:
        runctl aws train i-0abc123 training/train.py --wait -- --steps 5000
    """
    from runctl.store import open_store

    if nodes is not None:
        raise UsageError(f"aws train runs a job on one existing instance; --nodes {nodes} needs a group of that many: "
                         f"runctl aws run SCRIPT --nodes {nodes}")
    named = with_environment(resolve_script(app, script, script_args()), env, secret)
    refuse_nodes(named)
    folder = instance_checkpoint_dir(app, named, checkpoint_dir)
    nproc_per_node = instance_nproc(named, nproc_per_node)
    job_store = open_store(aws_store_url(app, store))
    require_running(app, instance_id, region)
    image = prepare_image(app, no_docker=no_docker, docker_image=docker_image, region=region)
    sent = send_job(app, job_store, instance_id, named, job_id=job_id, checkpoint_dir=folder,
                    resume_args=named.resume_args(resume_args),
                    sync_code=image is None if sync_code is None else sync_code, includes=includes, image=image,
                    nproc_per_node=nproc_per_node)
    if not wait:
        app.output.report(sent.report, lambda: app.output.line(
            f"job {sent.job_id} sent to {instance_id}; follow it with: runctl aws watch {sent.job_id}"))
        return
    click.get_current_context().exit(wait_and_report(app, job_store, sent, timeout=timeout))
