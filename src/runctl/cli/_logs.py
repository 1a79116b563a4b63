"""Printing a job's output from the store: what ``runctl logs`` and ``runctl aws logs`` share."""

from __future__ import annotations

import json
import sys
import time

import click


def show_logs(app, job_store, job_id: str, *, follow: bool, attempt: int | None) -> None:
    """Print the job's output, attempt by attempt (only ``attempt`` when given); with
    ``follow``, keep printing new output until the job ends or its agent is gone."""
    from runctl.agent.logs import attempts_with_logs, log_chunks
    from runctl.agent.status import FINAL_STATES, agent_gone, read_status

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
