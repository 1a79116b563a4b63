"""runctl logs JOB [-f]: a job's output, as the agent uploaded it to the store."""

from __future__ import annotations

import json
import sys
import time

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app


@click.command(short_help="Print (or follow) a job's logs from the store.")
@click.argument("job_id", metavar="JOB")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--attempt", type=int, help="Only this attempt (default: all).")
@_common.store_option
@output_option
@pass_app
def logs(app, job_id, follow, attempt, store):
    """Print JOB's output from the store, attempt by attempt."""
    from runctl.agent.logs import attempts_with_logs, log_chunks
    from runctl.agent.status import FINAL_STATES, agent_gone, read_status

    job_store, _ = _common.find_job(app, store, job_id)
    shown: set[str] = set()
    collected: dict[int, str] = {}
    while True:
        # Read the state first: every chunk shipped before a final state is then printed.
        status = read_status(job_store, job_id)
        gone = status is not None and agent_gone(status, time.time())
        finished = not follow or status is None or status.state in FINAL_STATES or gone
        for number in attempts_with_logs(job_store, job_id):
            if attempt is not None and number != attempt:
                continue
            for key in log_chunks(job_store, job_id, number):
                if key in shown:
                    continue
                shown.add(key)
                data = job_store.read(key).data
                if app.output.is_json:
                    collected[number] = collected.get(number, "") + data.decode(errors="replace")
                else:
                    sys.stdout.buffer.write(data)
                    sys.stdout.flush()
        if finished:
            if follow and gone:
                app.output.note(f"runctl: the agent of job {job_id} stopped beating; it may be gone "
                                "(run the job again to resume it)")
            break
        time.sleep(1.0)
    if app.output.is_json:
        click.echo(json.dumps({"job_id": job_id, "attempts": {str(k): v for k, v in collected.items()}}))
