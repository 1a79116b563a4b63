"""``runctl aws processes``: what runs on an instance (ps and nvidia-smi, through SSM)."""

from __future__ import annotations

import click

from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import instance_argument, region_option, run_on_instance
from runctl.errors import CloudError


@click.command("processes")
@instance_argument
@click.option("--all", "show_all", is_flag=True, help="Every process (default: the 20 busiest).")
@click.option("--timeout", type=click.FloatRange(min=1), default=120, show_default=True,
              help="Seconds to wait for the listing.")
@region_option
@output_option
@pass_app
def processes(app, instance_id, show_all, timeout, region):
    """List the processes on INSTANCE_ID by CPU use, and its GPUs when it has any."""
    from runctl.backends.aws.ssm import PROCESSES_SCRIPT, parse_processes

    result = run_on_instance(app, region, instance_id, PROCESSES_SCRIPT, timeout)
    if result.exit_code != 0:
        raise CloudError(f"ps on {instance_id} ended {result.status}: {result.stderr.strip()[:200]}")
    procs, gpus = parse_processes(result.stdout)
    shown = procs if show_all else procs[:20]

    def text() -> None:
        if not procs:
            app.output.note(f"no process listing from {instance_id} (SSM returned no output)")
            return
        app.output.table(("pid", "ppid", "user", "cpu %", "mem %", "elapsed s", "command"),
                         [(p["pid"], p["ppid"], p["user"], p["cpu_percent"], p["mem_percent"], p["elapsed_s"],
                           p["command"][:100]) for p in shown])
        if gpus:
            app.output.table(("gpu", "name", "util %", "memory MiB"),
                             [(g["index"], g["name"], g["utilization_percent"],
                               f"{g['memory_used_mib']}/{g['memory_total_mib']}") for g in gpus])

    app.output.report({"instance_id": instance_id, "processes": shown, "gpus": gpus}, text)
