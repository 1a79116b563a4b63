"""runctl aws ...: run jobs on EC2 (one module per command, imported lazily)."""

from __future__ import annotations

import click

from runctl.cli._lazy import LazyGroup

COMMANDS: dict[str, tuple[str, str]] = {
    # "name": ("runctl.cli.aws.<module>:<command>", "short help"),
    "create": ("runctl.cli.aws.create:create", "Launch a tagged instance (spot by default) with the runctl bootstrap."),
    "status": ("runctl.cli.aws.status:status", "Show an instance: state, type, market, zone, addresses, job."),
    "wait": ("runctl.cli.aws.wait:wait", "Wait until an instance is running (or stopped, terminated)."),
    "stop": ("runctl.cli.aws.stop:stop", "Stop an on-demand instance runctl launched."),
    "start": ("runctl.cli.aws.start:start", "Start a stopped instance runctl launched."),
    "terminate": ("runctl.cli.aws.terminate:terminate", "Terminate an instance runctl launched."),
    "setup": ("runctl.cli.aws.setup:setup", "Create the job bucket and instance role; record them in .runctl.toml."),
    "iam-policy": ("runctl.cli.aws.iam_policy:iam_policy", "Print a least-privilege IAM policy for runctl."),
    "cost": ("runctl.cli.aws.cost:cost", "What a job cost on EC2, and the saving against on-demand."),
    "exec": ("runctl.cli.aws.exec:exec_", "Run a command on an instance through SSM."),
    "processes": ("runctl.cli.aws.processes:processes", "List the processes (and GPUs) on an instance via SSM."),
    "train": ("runctl.cli.aws.train:train", "Run a script on an instance's runctl agent, with the project's code."),
    "logs": ("runctl.cli.aws.logs:logs", "Print (or follow) the output of a job on AWS, by job or instance."),
    "run": ("runctl.cli.aws.run:run", "Launch an instance, train a script on it, terminate it."),
    "watch": ("runctl.cli.aws.watch:watch", "Follow a job and relaunch it on a new instance when its instance is lost."),
    "cancel": ("runctl.cli.aws.cancel:cancel", "Cancel a job: stop relaunching it and terminate its instances."),
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS)
def aws() -> None:
    """Run training on EC2 instances, spot or on-demand."""
