"""``runctl checkpoint list|info|verify|prune``: a job's checkpoint snapshots in its store.

Which snapshots: ``--store URL --job JOB_ID``, or a TARGET URL naming a job
(``<store>/jobs/<id>``) or a checkpoints prefix (``<store>/jobs/<id>/checkpoints``, or any
folder of snapshot folders). Without either, the store is ``[checkpoint] store`` from the
configuration, else ``.runctl/store`` here, and ``--job`` names the job.
"""

from __future__ import annotations

import json
import re

import click

from runctl.cli import _common
from runctl.cli._context import App, output_option, pass_app
from runctl.errors import IntegrityError, NotFoundError, UsageError

_JOB_URL = re.compile(r"^(?:(?P<root>.*?)/)?jobs/(?P<job>[^/]+)(?:/checkpoints)?/*$")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _split_args(args: tuple[str, ...], *, takes_seq: bool) -> tuple[str | None, int | None]:
    """TARGET and SEQ from the positional arguments: a number is a SEQ, anything else the
    TARGET (write ./3 for a folder named 3)."""
    target = seq = None
    for arg in args:
        if takes_seq and arg.isascii() and arg.isdigit():
            if seq is not None:
                raise UsageError(f"more than one SEQ given ({seq} and {arg})")
            seq = int(arg)
        elif target is None:
            target = arg
        else:
            raise UsageError(f"more than one TARGET given ({target!r} and {arg!r})")
    return target, seq


def _jobs_hint(store) -> str:
    jobs = store.list_dirs("jobs/")
    if not jobs:
        return f"there are no jobs in {store.url}"
    shown = ", ".join(jobs[:10]) + (", ..." if len(jobs) > 10 else "")
    return f"jobs in {store.url}: {shown}"


def _snapshots(app: App, target: str | None, store_url: str | None, job: str | None):
    from runctl.store import layout, open_store
    from runctl.store.snapshots import Snapshots

    if target and store_url:
        raise UsageError("give the store either as TARGET or with --store, not both")
    if job is not None and not layout.JOB_ID_PATTERN.match(job):
        raise UsageError(f"{job!r} is not a job id")
    if target and job is None:
        match = _JOB_URL.match(target)
        if match and layout.JOB_ID_PATTERN.match(match["job"]):
            root = match["root"]
            target, store_url, job = None, "." if root is None else root or "/", match["job"]
        else:  # a folder of snapshot folders
            snaps = Snapshots(open_store(target), "")
            if not snaps.all_seqs() and snaps.store.list_dirs("jobs/"):
                raise UsageError(f"{target} is a store, not a job's checkpoints; add --job JOB_ID "
                                 f"({_jobs_hint(snaps.store)})")
            return snaps
    store = open_store(_common.store_url(app, target or store_url))
    if job is None:
        raise UsageError(f"which job? Use --job JOB_ID or a TARGET URL ending in /jobs/JOB_ID ({_jobs_hint(store)})")
    return Snapshots(store, layout.checkpoints_prefix(job))


def _target_options(func):
    func = click.option("--job", "job", metavar="JOB_ID", help="The job whose checkpoints to use.")(func)
    func = _common.store_option(func)
    return output_option(func)


def _latest_or(snaps, seq: int | None):
    if seq is not None:
        return snaps.get(seq)
    latest = snaps.latest()
    if latest is None:
        raise NotFoundError(f"no complete checkpoint snapshot at {snaps.url}")
    return latest


def _summary(info) -> dict:
    return {"seq": info.seq, "created": info.created, "files": len(info.files), "total_bytes": info.total_bytes,
            "url": info.url, "metadata": info.metadata}


@click.group("checkpoint")
def checkpoint() -> None:
    """List, inspect, verify and prune a job's checkpoint snapshots.

    \b
    Examples:
      runctl checkpoint list --job train-1a2b3c
      runctl checkpoint info s3://bucket/runctl/jobs/train-1a2b3c 12
      runctl checkpoint verify --all --store s3://bucket/runctl --job train-1a2b3c
      runctl checkpoint prune ./.runctl/store/jobs/train-1a2b3c --keep-last-n 3 --dry-run
    """


@checkpoint.command("list")
@click.argument("target", required=False, metavar="[TARGET]")
@_target_options
@pass_app
def list_(app: App, target: str | None, store: str | None, job: str | None) -> None:
    """The complete snapshots, oldest first."""
    snaps = _snapshots(app, target, store, job)
    infos = snaps.list()
    rows = [(i.seq, i.created, len(i.files), _size(i.total_bytes)) for i in infos]

    def text() -> None:
        if not rows:
            app.output.line(f"no complete checkpoint snapshots at {snaps.url}")
        else:
            app.output.table(("seq", "created", "files", "size"), rows, title=snaps.url)

    app.output.report([_summary(i) for i in infos], text)


@checkpoint.command("info")
@click.argument("args", nargs=-1, metavar="[TARGET] [SEQ]")
@_target_options
@pass_app
def info(app: App, args: tuple[str, ...], store: str | None, job: str | None) -> None:
    """One snapshot's files with their sizes and sha256 (default: the latest)."""
    target, seq = _split_args(args, takes_seq=True)
    snaps = _snapshots(app, target, store, job)
    found = _latest_or(snaps, seq)

    def text() -> None:
        app.output.line(f"snapshot {found.seq} at {found.url}")
        app.output.line(f"created   {found.created}")
        app.output.line(f"files     {len(found.files)}, {_size(found.total_bytes)} ({found.total_bytes} bytes)")
        if found.metadata:
            app.output.line(f"metadata  {json.dumps(found.metadata, sort_keys=True)}")
        app.output.table(("path", "size", "sha256"), [(f.path, f.size, f.sha256) for f in found.files])

    app.output.report(found, text)


@checkpoint.command("verify")
@click.argument("args", nargs=-1, metavar="[TARGET] [SEQ]")
@click.option("--all", "all_", is_flag=True, help="Verify every complete snapshot.")
@_target_options
@pass_app
def verify(app: App, args: tuple[str, ...], all_: bool, store: str | None, job: str | None) -> None:
    """Re-read a snapshot (default: the latest) and check every file's size and sha256.

    Exit code 3 when any snapshot has a problem.
    """
    target, seq = _split_args(args, takes_seq=True)
    if all_ and seq is not None:
        raise UsageError("give a SEQ or --all, not both")
    snaps = _snapshots(app, target, store, job)
    infos = snaps.list() if all_ else [_latest_or(snaps, seq)]
    results = []
    with app.output.progress("verifying", sum(i.total_bytes for i in infos)) as advance:
        for found in infos:
            problems = snaps.verify(found, progress=advance)
            results.append({"seq": found.seq, "ok": not problems, "problems": problems,
                            "files": len(found.files), "total_bytes": found.total_bytes})

    def text() -> None:
        if not results:
            app.output.line(f"no complete checkpoint snapshots at {snaps.url}")
        for r in results:
            if r["ok"]:
                app.output.line(f"snapshot {r['seq']}: ok ({r['files']} files, {_size(r['total_bytes'])})")
            else:
                app.output.line(f"snapshot {r['seq']}: {len(r['problems'])} problem(s)")
                for problem in r["problems"]:
                    app.output.line(f"  {problem}")

    app.output.report(results, text)
    failed = [r["seq"] for r in results if not r["ok"]]
    if failed:
        raise IntegrityError(f"{len(failed)} of {len(results)} snapshot(s) failed verification at {snaps.url}: "
                             + ", ".join(map(str, failed)))


@checkpoint.command("prune")
@click.argument("target", required=False, metavar="[TARGET]")
@click.option("--keep-last-n", "keep_last_n", type=click.IntRange(min=1), required=True, metavar="N",
              help="How many of the newest complete snapshots to keep.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@_target_options
@pass_app
def prune(app: App, target: str | None, keep_last_n: int, dry_run: bool, store: str | None, job: str | None) -> None:
    """Remove all but the newest N complete snapshots, and the leftovers of crashed commits
    older than the newest one (a newer incomplete snapshot may be a commit in progress)."""
    snaps = _snapshots(app, target, store, job)
    complete = [i.seq for i in snaps.list()]
    removed = snaps.prune(keep_last_n, dry_run=dry_run)
    kept = [s for s in complete if s not in removed]

    def text() -> None:
        if not removed:
            app.output.line(f"nothing to prune at {snaps.url} (keeping {', '.join(map(str, kept)) or 'none'})")
            return
        verb = "would remove" if dry_run else "removed"
        app.output.line(f"{verb} {len(removed)} snapshot folder(s) at {snaps.url}: {', '.join(map(str, removed))}")
        app.output.line(f"kept {', '.join(map(str, kept))}")

    app.output.report({"url": snaps.url, "removed": removed, "kept": kept, "dry_run": dry_run}, text)
