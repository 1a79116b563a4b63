"""runctl status [JOB]: a job's state, its attempts and its latest interruption notice."""

from __future__ import annotations

import time

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app
from runctl.cli._output import local_time
from runctl.errors import UsageError


@click.command(short_help="Show a job's state, attempts and latest interruption notice.")
@click.argument("job_id", required=False, metavar="[JOB]")
@_common.store_option()
@output_option
@pass_app
def status(app, job_id, store):
    """Show JOB (default: the job with the latest heartbeat in the store).

    Without --store, a JOB not in the default store is looked for in the store of the AWS
    jobs too (s3://<[aws] s3_bucket>/runctl), where `runctl aws train|run` put it."""
    from runctl.agent.status import list_job_ids, read_status

    if job_id is not None:
        job_store, job = _common.find_job(app, store, job_id)
    else:
        job_store = _common.open_job_store(app, store)
        statuses = [s for s in (read_status(job_store, j) for j in list_job_ids(job_store)) if s]
        if not statuses:
            raise UsageError(f"no jobs in {job_store.url}; start one with runctl run SCRIPT")
        job = max(statuses, key=lambda s: s.heartbeat or 0)
    group = _group_view(job_store, job.job_id)
    report = job if group is None else {**job.to_dict(), **group}
    app.output.report(report, lambda: _render(app, job, group))


def _group_view(job_store, job_id: str) -> dict | None:
    """A job on AWS: its group and its recoveries as the agents recorded them."""
    from runctl.agent.group_record import boot_failures, read_group, read_recovery_list

    settings = read_group(job_store, job_id)
    if settings is None:
        return None
    view = {"group": settings, "recovery_records": read_recovery_list(job_store, job_id),
            "boot_failures": boot_failures(job_store, job_id)}
    nodes = settings.get("group", {}).get("size", 1)  # one instance per node (jobs.submit)
    return {**view, **_nodes_view(job_store, job_id, nodes, time.time())} if nodes > 1 else view


def _nodes_view(job_store, job_id: str, nodes: int, now: float) -> dict:
    """A job of several machines: its rendezvous host and epoch, its machines now (their
    membership records: one listing, one read each) and every stop of all of them."""
    from runctl.agent.membership import is_live, node_records
    from runctl.agent.multinode import MEMBERSHIP_TTL_S
    from runctl.agent.rendezvous import read_rendezvous
    from runctl.interruptions.job_stop import job_stops

    found = read_rendezvous(job_store, job_id)
    host = found[0].instance_id if found else None
    machines = [{**record.to_dict(), "role": "host" if record.instance_id == host else "member",
                 "heartbeat_age": round(now - record.heartbeat, 1),
                 "stale": not is_live(record, now, MEMBERSHIP_TTL_S)} for record in node_records(job_store, job_id)]
    rendezvous = None if found is None else {
        key: value for key, value in found[0].to_dict().items() if key != "token"}  # the token is the writers' only
    return {"nodes": nodes, "rendezvous": rendezvous, "machines": machines,
            "stops": [{key: value for key, value in stop.to_dict().items() if key != "earlier"}  # listed apart
                      for stop in job_stops(job_store, job_id)]}


def _render(app, job, group: dict | None = None) -> None:
    from runctl.agent.status import agent_gone
    from runctl.agent.restart_policy import recoveries, time_lost

    state = f"{job.state} (no heartbeat since {local_time(job.heartbeat)}: the agent may be gone)" \
        if agent_gone(job, time.time()) else job.state
    app.output.line(f"job {job.job_id}: {state}" + (f" ({job.message})" if job.message else ""))
    for warning in job.warnings:
        app.output.line(click.style(f"  warning: {warning}", fg="yellow"))
    app.output.line(f"  attempts: {len(job.attempts)}, recoveries: {recoveries(job.attempts)}, "
                    f"time lost: {time_lost(job.attempts):.1f}s, heartbeat: {local_time(job.heartbeat)}")
    placed = [a for a in job.attempts if a.instance_id]
    if placed:
        app.output.line("  instances: " + ", ".join(
            f"{a.instance_id} ({a.instance_type or '?'}, {a.az or '?'})" for a in placed))
    if group is not None:
        _render_group(app, group)
    if group is not None and "nodes" in group:
        _render_nodes(app, group)
    if job.notice:
        deadline = job.notice.get("deadline")
        app.output.line(f"  last notice: {job.notice.get('source')} {job.notice.get('action')} at "
                        f"{local_time(job.notice.get('received'))}" + (f", deadline {local_time(deadline)}" if deadline else ""))
    rows = [(a.number, local_time(a.started), local_time(a.ended), a.reason or "running", a.exit_code,
             "fresh" if a.resumed_from is None else a.resumed_from, a.final_snapshot,
             a.last_step if a.last_step is not None else "-") for a in job.attempts]
    app.output.table(("attempt", "started", "ended", "reason", "exit", "resumed from", "final snapshot", "step"), rows)
    for a in job.attempts:  # after the table: too long a cell for it
        if a.environment:
            app.output.line(f"  attempt {a.number} environment: {a.environment}")


def _render_group(app, group: dict) -> None:
    settings = group["group"]
    name = settings.get("group", {}).get("name", "?")
    ended = settings.get("ended")
    where = (f"deleted when the job {ended['state']} (by {ended.get('by', '?')})" if ended else
             "running; it resumes the job on AWS" + ("" if settings.get("auto_resume", True) else " (auto-resume off)"))
    app.output.line(f"  group: {name}, {where}")
    for n, record in enumerate(group["recovery_records"], 1):
        seen = record.get("notice_seen")
        requested = (f", replacement requested {record['launch_requested'] - seen:.1f}s after the notice"
                     if seen and record.get("launch_requested") else "")
        started = (f", its agent started {record['agent_started'] - seen:.1f}s after"
                   if seen and record.get("agent_started") else "")
        app.output.line(f"  recovery {n}: {record.get('old_instance')} {record.get('reason', 'lost')}{requested}"
                        f"{started} -> {record.get('launched') or 'not yet'}"
                        + (f" ({record.get('instance_type')}, {record.get('az')})" if record.get("launched") else ""))
    failures = group["boot_failures"]
    if failures:
        app.output.line(f"  boot failures in a row: {len(failures)} ({', '.join(failures)}): their agent never "
                        "started")


def _render_nodes(app, group: dict) -> None:
    rendezvous = group["rendezvous"]
    app.output.line(f"  nodes: {group['nodes']}, " + (
        f"rendezvous host {rendezvous['instance_id']} (epoch {rendezvous['epoch']})" if rendezvous
        else "no rendezvous host yet"))
    if group["machines"]:
        app.output.table(("instance", "address", "epoch", "role", "heartbeat"), [
            (m["instance_id"], m["address"], m["epoch"], m["role"],
             f"{m['heartbeat_age']:.0f}s ago" + (" (stale)" if m["stale"] else "")) for m in group["machines"]])
    else:  # each machine deletes its record as it leaves: a finished job has none
        app.output.line("  machines: none in the job now")
    for stop in group["stops"]:
        app.output.line(f"  stop of epoch {stop['epoch']} at {local_time(stop['requested'])}: {stop['reason']}")
