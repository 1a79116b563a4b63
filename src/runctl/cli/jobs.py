"""runctl jobs: the jobs in the store, newest first."""

from __future__ import annotations

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app
from runctl.cli.status import _when


@click.command(short_help="List the jobs in the store.")
@_common.store_option
@output_option
@pass_app
def jobs(app, store):
    """List every job in the store with its state and attempts."""
    from runctl.agent.status import list_job_ids, read_status

    job_store = _common.open_job_store(app, store)
    found = [s for s in (read_status(job_store, j) for j in list_job_ids(job_store)) if s]
    found.sort(key=lambda s: s.heartbeat or 0, reverse=True)
    rows = [(s.job_id, s.state, len(s.attempts), _when(s.heartbeat)) for s in found]
    app.output.report(found, lambda: app.output.table(("job", "state", "attempts", "heartbeat"), rows)
                      if rows else app.output.line(f"no jobs in {job_store.url}"))
