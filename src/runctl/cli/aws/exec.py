"""``runctl aws exec``: run a command on an instance through SSM and print its output."""

from __future__ import annotations

import click

from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import instance_argument, region_option, run_on_instance
from runctl.errors import CloudError


@click.command("exec")
@instance_argument
@click.argument("command", nargs=-1, required=True)
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds to wait for the command.")
@region_option
@output_option
@pass_app
def exec_(app, instance_id, command, timeout, region):
    """Run COMMAND on INSTANCE_ID (SSM Run Command, as root) and print its output.

    \b
    One word is a shell line; several are quoted as arguments:
        runctl aws exec i-0abc -- nvidia-smi -L
        runctl aws exec i-0abc -- 'tail -n 50 /var/log/runctl-agent.log | grep -i error'
    Exits with the command's exit code (3 when SSM could not run it).
    """
    from runctl.backends.aws.ssm import shell_line

    result = run_on_instance(app, region, instance_id, shell_line(command), timeout)

    def text() -> None:
        if result.stdout:
            click.echo(result.stdout, nl=not result.stdout.endswith("\n"))
        if result.stderr:
            click.echo(result.stderr, err=True, nl=not result.stderr.endswith("\n"))

    app.output.report(result, text)
    if result.exit_code is None:
        raise CloudError(f"the command on {instance_id} ended {result.status} (SSM command {result.command_id})")
    if result.exit_code:
        click.get_current_context().exit(result.exit_code)
