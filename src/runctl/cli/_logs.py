"""Following a job's output in the store: the one follower behind ``runctl logs [-f]``,
``runctl aws logs``, and the following done by ``aws train``, ``aws run`` and ``aws watch``.

``runctl.agent.logs.LogFollower`` reads the log chunks the agent uploaded and hands over each one once, in
order; calling it writes the new ones to its sink, ``app.output.job_output`` for every
command that streams a job's output. ``show_logs`` is ``runctl logs``: it also knows when to
stop following (the job ended or its agent is gone) and collects the output under
``--output json``.
"""

from __future__ import annotations

import json
import time

import click


def node_option(command):
    """``--node``: another machine of a job of several than its rendezvous host."""
    return click.option("--node", metavar="INSTANCE_ID",
                        help="A job of several machines: this machine's output (default: the host's, which "
                             "records the job).")(command)


def show_logs(app, job_store, job_id: str, *, follow: bool, attempt: int | None, node: str | None = None) -> None:
    """Print the job's output, attempt by attempt (only ``attempt`` when given); with
    ``follow``, keep printing new output until the job ends or its agent is gone. ``node``:
    that machine's output, of a job of several."""
    from runctl.agent.status import FINAL_STATES, agent_gone, read_status

    from runctl.agent.logs import LogFollower, nodes_with_logs

    others = nodes_with_logs(job_store, job_id)
    if node is not None and node not in others:
        from runctl.errors import UsageError

        raise UsageError(f"no machine {node} shipped output for job {job_id}; "
                         + (f"its other machines: {', '.join(others)}" if others else
                            "it has no machine but its host (leave out --node)"))
    follower = LogFollower(job_store, job_id, sink=app.output.job_output, attempt=attempt, node=node)
    collected: dict[int, str] = {}
    while True:
        # Read the state first: every chunk shipped before a final state is then printed.
        status = read_status(job_store, job_id)
        gone = status is not None and agent_gone(status, time.time())
        finished = not follow or status is None or status.state in FINAL_STATES or gone
        if app.output.is_json:
            for number, data in follower.new_chunks():
                collected[number] = collected.get(number, "") + data.decode(errors="replace")
        else:
            follower()
        if finished:
            if follow and gone:
                app.output.note(f"runctl: the agent of job {job_id} stopped beating; it may be gone "
                                "(run the job again to resume it)")
            break
        time.sleep(1.0)
    if app.output.is_json:
        click.echo(json.dumps({"job_id": job_id, "node": node, "attempts": {str(k): v for k, v in collected.items()}}))
    elif node is None and others:
        app.output.note(f"runctl: that was the host's output; the job's other machines: "
                        f"{', '.join(f'--node {other}' for other in others)}")
