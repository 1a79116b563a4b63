"""``runctl checkpoint list|info|verify|restore|prune``: a job's checkpoint snapshots in its store.

Which snapshots: ``--store URL --job JOB_ID``, a TARGET that is a job id, or a TARGET URL
naming a job (``<store>/jobs/<id>``) or a checkpoints prefix (``<store>/jobs/<id>/checkpoints``, or any
folder of snapshot folders). Without either, the store is ``[checkpoint] store`` from the
configuration, else ``.runctl/store`` here, and ``--job`` names the job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import click

from runctl.checkpoints import latest_or, open_snapshots, restore_into
from runctl.cli import _common
from runctl.cli._context import App, output_option, pass_app
from runctl.cli._output import human_size
from runctl.errors import IntegrityError, NotFoundError, UsageError


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


def _snapshots(app: App, target: str | None, store_url: str | None, job: str | None):
    # A job named without a store is looked for where `status` looks: here, then the AWS jobs' store.
    return open_snapshots(target, store=store_url, job=job, default_store=_common.job_store_urls(app, None))


def _target_options(func):
    func = click.option("--job", "job", metavar="JOB_ID", help="The job whose checkpoints to use.")(func)
    func = _common.store_option()(func)
    return output_option(func)


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
      runctl checkpoint restore train-1a2b3c --to eval/checkpoint
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
    rows = [(i.seq, i.created, len(i.files), human_size(i.total_bytes)) for i in infos]

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
    found = latest_or(snaps, seq)

    def text() -> None:
        app.output.line(f"snapshot {found.seq} at {found.url}")
        app.output.line(f"created   {found.created}")
        app.output.line(f"files     {len(found.files)}, {human_size(found.total_bytes)} ({found.total_bytes} bytes)")
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
    """Re-read a snapshot (default: the newest) and check its manifest and every file's size and sha256.

    Exit code 3 when any snapshot has a problem.
    """
    target, seq = _split_args(args, takes_seq=True)
    if all_ and seq is not None:
        raise UsageError("give a SEQ or --all, not both")
    snaps = _snapshots(app, target, store, job)
    manifests = _manifests_to_verify(snaps, seq, all_)
    infos = [m for m in manifests if not isinstance(m, _InvalidManifest)]
    results = []
    with app.output.progress("verifying", sum(i.total_bytes for i in infos)) as advance:
        for found in manifests:
            if isinstance(found, _InvalidManifest):
                results.append({"seq": found.seq, "ok": False, "problems": [found.why], "files": 0, "total_bytes": 0})
                continue
            problems = snaps.verify(found, progress=advance)
            results.append({"seq": found.seq, "ok": not problems, "problems": problems,
                            "files": len(found.files), "total_bytes": found.total_bytes})

    def text() -> None:
        if not results:
            app.output.line(f"no complete checkpoint snapshots at {snaps.url}")
        for r in results:
            if r["ok"]:
                app.output.line(f"snapshot {r['seq']}: ok ({r['files']} files, {human_size(r['total_bytes'])})")
            else:
                app.output.line(f"snapshot {r['seq']}: {len(r['problems'])} problem(s)")
                for problem in r["problems"]:
                    app.output.line(f"  {problem}")

    app.output.report(results, text)
    failed = [r["seq"] for r in results if not r["ok"]]
    if failed:
        raise IntegrityError(f"{len(failed)} of {len(results)} snapshot(s) failed verification at {snaps.url}: "
                             + ", ".join(map(str, failed)))


@dataclass(frozen=True)
class _InvalidManifest:
    seq: int
    why: str


def _manifests_to_verify(snaps, seq: int | None, all_: bool) -> list:
    """The snapshots to verify: SEQ, every one (--all), or the newest one with a manifest.

    A manifest that does not validate is listed as an ``_InvalidManifest``: the agent and
    ``list`` pass over it as if the snapshot were incomplete; a verification reports it.
    A folder without a manifest (a commit in progress, or a crashed one) is not a snapshot.
    """
    if seq is not None:
        candidates = [seq]
    elif all_:
        candidates = snaps.all_seqs()
    else:
        candidates = list(reversed(snaps.all_seqs()))
    found: list = []
    for candidate in candidates:
        try:
            found.append(snaps.get(candidate))
        except NotFoundError:
            if seq is not None:
                raise
            continue
        except IntegrityError as exc:
            found.append(_InvalidManifest(candidate, str(exc)))
        if not all_:
            return found
    if not found and not all_:
        raise NotFoundError(f"no complete checkpoint snapshot at {snaps.url}")
    return found


@checkpoint.command("restore")
@click.argument("args", nargs=-1, metavar="[TARGET] [SEQ]")
@click.option("--to", "dest", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="The folder to put the snapshot's files in (created if missing).")
@_target_options
@pass_app
def restore(app: App, args: tuple[str, ...], dest: str, store: str | None, job: str | None) -> None:
    """Download a snapshot (default: the latest) into DIR, every file verified first.

    Files already in DIR with the right content are kept; nothing is written outside DIR.
    """
    target, seq = _split_args(args, takes_seq=True)
    snaps = _snapshots(app, target, store, job)
    found = latest_or(snaps, seq)
    with app.output.progress("restoring", found.total_bytes) as advance:
        fetched = restore_into(snaps, dest, found.seq, progress=advance)
    result = {"seq": fetched.seq, "folder": str(fetched.folder), "files": len(found.files),
              "total_bytes": found.total_bytes, "newest": str(fetched.newest) if fetched.newest else None}

    def text() -> None:
        app.output.line(f"restored snapshot {fetched.seq} ({len(found.files)} files, {human_size(found.total_bytes)}) "
                        f"into {fetched.folder}")
        if fetched.newest:
            app.output.line(f"newest checkpoint: {fetched.newest}")

    app.output.report(result, text)


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
