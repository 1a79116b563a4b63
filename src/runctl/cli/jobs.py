"""runctl jobs: the jobs in the store, newest first."""

from __future__ import annotations

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app
from runctl.cli._output import local_time


@click.command(short_help="List the jobs in the store.")
@_common.store_option()
@output_option
@pass_app
def jobs(app, store):
    """List every job in the store with its state and attempts.

    Without --store: the default store's jobs, and those of the AWS jobs' store
    (s3://<[aws] s3_bucket>/runctl) when [aws] s3_bucket is set; then each row (and each
    JSON record, always) names its store."""
    from runctl.agent.status import list_job_ids, read_status
    from runctl.errors import RunctlError

    stores = _common.job_stores(app, store)
    found = []
    for job_store in stores:
        try:
            found += [(job_store, s) for s in (read_status(job_store, j) for j in list_job_ids(job_store)) if s]
        except RunctlError as exc:
            if job_store is stores[0]:
                raise
            app.output.note(f"runctl: cannot list the jobs in {job_store.url}: {exc}")
    found.sort(key=lambda pair: pair[1].heartbeat or 0, reverse=True)
    both = len(stores) > 1
    rows = [(s.job_id, s.state, len(s.attempts), local_time(s.heartbeat), *([js.url] if both else [])) for js, s in found]
    headers = ("job", "state", "attempts", "heartbeat", *(["store"] if both else []))
    # The store tells apart two jobs of the same id (one here, one on AWS).
    app.output.report([{**s.to_dict(), "store": js.url} for js, s in found],
                      lambda: app.output.table(headers, rows) if rows
                      else app.output.line(f"no jobs in {' or '.join(js.url for js in stores)}"))
