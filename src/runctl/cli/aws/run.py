"""runctl aws run SCRIPT: submit a job to AWS, in an Auto Scaling group of its own, and follow it.

The job's code and spec go to the store; its group (a launch template and a one-instance
group, spot by default over the instance type and its fallbacks in every subnet) keeps an
instance running for it; each instance's agent runs or resumes the job, and the agent that
sees it end deletes the group. Nothing of the job depends on this command: by default it
follows the job's output to its end (Ctrl-C, SIGTERM or a closed terminal stop the
following only; ``runctl aws watch JOB`` follows again from any machine), ``--detach``
returns at once. Exit code: the job's (0, 1, 130).
"""

from __future__ import annotations

import click

from runctl.cli import _common
from runctl.cli._args import script_args, script_command
from runctl.cli._context import output_option, pass_app
from runctl.cli._env import with_env_options, with_environment
from runctl.cli.aws._docker import prepare_image, with_docker_options
from runctl.cli._torchrun import nproc_option
from runctl.cli.aws._jobs import (auto_resume_on, instance_checkpoint_dir, instance_nproc, job_nodes, job_spec,
                                  prepare_code, resolve_script, with_checkpoint_options, with_code_options)
from runctl.cli.aws._pricing import max_price_option
from runctl.cli.aws._shared import aws_store_url


@script_command(name="run", short_help="Run SCRIPT on AWS in a group of its own, which resumes it on spot.")
@click.option("--instance-type", "-t", metavar="TYPE", help="Instance type (default: [aws] default_instance_type).")
@click.option("--spot/--on-demand", default=None, help="Market (default: [aws] use_spot).")
@max_price_option
@with_code_options
@with_checkpoint_options
@with_docker_options
@with_env_options
@nproc_option
@click.option("--nodes", type=click.IntRange(min=1), metavar="N",
              help="Run on N instances at once, the script under torchrun on each (c10d rendezvous; "
                   "--nproc-per-node per instance, default 1).")
@click.option("--detach", is_flag=True, help="Submit the job and return at once, printing its id.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Stop following after S seconds (exit 1; the job goes on).")
@click.option("--auto-resume/--no-auto-resume", default=None,
              help="Resume the job on a new instance when its instance is reclaimed or lost "
                   "(default: [aws] auto_resume / RUNCTL_AUTO_RESUME).")
@click.option("--store", metavar="URL", callback=_common.refuse_empty_store,
              help="Job store (default: an s3:// [checkpoint] store, else s3://<[aws] s3_bucket>/runctl).")
@click.option("--region", metavar="REGION", help="AWS region (default: [aws] region / AWS_REGION).")
@output_option
@pass_app
@click.pass_context
def run(ctx, app, script, instance_type, spot, max_price_per_hour, sync_code, includes, job_id, checkpoint_dir,
        resume_args, no_docker, docker_image, env, secret, nproc_per_node, nodes, detach, timeout, auto_resume, store,
        region):
    """Run SCRIPT (a file of the project, or a job NAME of .runctl.toml) on AWS with the
    project's code, in an Auto Scaling group of its own that keeps it running: a reclaimed
    or lost instance is replaced and the job resumed, and the group is deleted when the job
    ends, all on AWS.

    \b
    Its arguments go after --:
        runctl aws run training/train.py -t g5.xlarge -- --steps 5000
    A job's keys (instance_type, spot, max_price_per_hour ...) are defaults the options override.
    """
    from runctl.cli.aws._group import follow, submit
    from runctl.store import open_store

    named = with_environment(resolve_script(app, script, script_args()), env, secret)
    folder = instance_checkpoint_dir(app, named, checkpoint_dir)
    nodes = job_nodes(app, named, nodes, no_docker=no_docker, docker_image=docker_image)
    if nodes > 1 and nproc_per_node is None and named.job.nproc_per_node is None:
        nproc_per_node = "1"  # one process per machine, under torchrun
    nproc_per_node = instance_nproc(named, nproc_per_node)
    job_store = open_store(aws_store_url(app, store))
    job_id = _common.resolve_job_id(job_store, job_id, named.script, named.args)
    image = prepare_image(app, no_docker=no_docker, docker_image=docker_image, region=region)  # before paying, too
    sync_code = image is None if sync_code is None else sync_code
    command, tree = prepare_code(app, job_store, named, sync_code, includes, folder)
    spec = job_spec(app, job_store, named, job_id, command, tree, checkpoint_dir=folder,
                    resume_args=named.resume_args(resume_args), image=image, nproc_per_node=nproc_per_node,
                    nodes=nodes)
    submitted = submit(app, job_store, spec, job=named.job, instance_type=instance_type, spot=spot,
                       max_price_per_hour=max_price_per_hour, region=region,
                       auto_resume=auto_resume_on(app, auto_resume))
    report = {"job_id": job_id, "group": submitted.group.name, "store": job_store.url, "code_tree": tree,
              "command": list(command), "image": image.ref if image is not None else None}
    if detach:
        app.output.report(report, lambda: app.output.line(
            f"job {job_id} submitted; follow it with: runctl aws watch {job_id}; stop it with: "
            f"runctl aws cancel {job_id}"))
        return
    ctx.exit(follow(app, job_store, job_id, first_attempt=submitted.first_attempt, timeout=timeout, report=report))
