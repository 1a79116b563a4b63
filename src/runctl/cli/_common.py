"""Helpers shared by the job commands: the project folder, the default store, job ids."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from runctl.errors import UsageError

STATE_DIR = ".runctl"


def project_dir() -> Path:
    """Where runctl keeps local state: the current folder."""
    return Path.cwd()


def store_url(app, explicit: str | None) -> str:
    """The store to use: --store, then [checkpoint] store, then .runctl/store here."""
    if explicit:
        return explicit
    configured = app.config.checkpoint.store
    return configured or str(project_dir() / STATE_DIR / "store")


def job_run_dir(job_id: str) -> Path:
    return project_dir() / STATE_DIR / "jobs" / job_id


def derived_job_id(script: str, args: tuple[str, ...], workdir: Path) -> str:
    """A stable id for 'this script with these arguments in this folder', readable by name."""
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(script).stem).strip("-.") or "job"
    digest = hashlib.sha256("\0".join([str(workdir), script, *args]).encode()).hexdigest()[:6]
    return f"{stem[:40]}-{digest}"


def refuse_empty_store(ctx, param, value: str | None) -> str | None:
    """A click callback: ``--store ""`` (``--store "$STORE"`` with STORE unset) is a mistake,
    not a request for the default store, where the job would land unasked."""
    if value is not None and not value.strip():
        raise UsageError("--store is empty; give a folder, file:///abs/path or s3://bucket/prefix, "
                         "or leave --store out for the default store")
    return value


LOCAL_STORE = "[checkpoint] store, else .runctl/store here"  # the rule of store_url
AWS_STORE = "an s3:// [checkpoint] store, else s3://<[aws] s3_bucket>/runctl"  # bootstrap.store_url_for's


def store_option(default: str = LOCAL_STORE):
    """The ``--store`` option of every command that takes one. Only the default differs
    between commands (``LOCAL_STORE``, ``AWS_STORE``), so only it is a parameter."""
    return click.option("--store", "store", metavar="URL", callback=refuse_empty_store,
                        help="Job store: s3://bucket/prefix, or a folder or file:///path for jobs run here "
                             f"(default: {default}).")


def open_job_store(app, explicit: str | None):
    from runctl.store import open_store

    return open_store(store_url(app, explicit))


def require_job(store, job_id: str):
    from runctl.agent.status import read_status

    status = read_status(store, job_id)
    if status is None:
        raise UsageError(f"no job {job_id!r} in {store.url}; `runctl jobs` lists the jobs there")
    return status


def job_store_urls(app, explicit: str | None) -> list[str]:
    """Where jobs are looked for: --store alone when given; else the default store, then the
    store of the AWS jobs (s3://<[aws] s3_bucket>/runctl), where `runctl aws train|run` put
    them, when [aws] s3_bucket is set."""
    from runctl.backends.aws.bootstrap import store_url_for

    first = store_url(app, explicit)
    bucket = None if explicit else app.config.aws.s3_bucket
    aws_url = store_url_for(bucket, None, app.config.checkpoint.store) if bucket else None
    if aws_url and aws_url.rstrip("/") != first.rstrip("/"):
        return [first, aws_url]
    return [first]


def job_stores(app, explicit: str | None) -> list:
    """The stores of ``job_store_urls``, opened."""
    from runctl.store import open_store

    return [open_store(url) for url in job_store_urls(app, explicit)]


def find_job(app, explicit: str | None, job_id: str):
    """(store, status) of ``job_id`` in the first of ``job_stores`` that has it."""
    from runctl.agent.status import read_status

    stores = job_stores(app, explicit)
    for store in stores:
        status = read_status(store, job_id)
        if status is not None:
            return store, status
    raise UsageError(f"no job {job_id!r} in {' or '.join(s.url for s in stores)}; "
                     "`runctl jobs` lists the jobs there")


def resolve_job_id(store, explicit: str | None, script: str, args: tuple[str, ...]) -> str:
    """``--job-id`` when given (refused when that job already completed); else the id
    derived from the script and its arguments, or its next free '-N' variant when the job
    of that id already completed."""
    from runctl.agent.status import read_status
    from runctl.store.layout import JOB_ID_PATTERN

    if explicit is not None:
        if not JOB_ID_PATTERN.match(explicit):
            raise UsageError(f"invalid --job-id {explicit!r}: use letters, digits, '.', '_' and '-' (at most 128)")
        status = read_status(store, explicit)
        if status is not None and status.state == "completed":
            raise UsageError(f"job {explicit} already completed; give a new --job-id to run it again")
        return explicit
    base = derived_job_id(script, args, Path.cwd())
    for n in range(1, 10_000):
        candidate = base if n == 1 else f"{base}-{n}"
        status = read_status(store, candidate)
        if status is None or status.state != "completed":
            return candidate
    raise UsageError(f"too many completed runs of {base}; give a --job-id")
