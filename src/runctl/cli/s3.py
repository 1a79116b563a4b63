"""``runctl s3 upload|download|sync|list|cleanup``: move files to and from any store URL.

Every command takes a store URL: ``s3://bucket/prefix`` or a local folder (a path or
``file:///abs/path``). Transfers run in parallel (``--jobs``) with one progress bar for
the total bytes. ``cleanup`` removes old checkpoint snapshots and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from runctl.cli._context import App, output_option, pass_app
from runctl.cli._output import human_size
from runctl.errors import NotFoundError, UsageError
from runctl.store import ObjectInfo, ProgressCallback, Store, open_store, parse_store_url
from runctl.store.manifest import MANIFEST_NAME
from runctl.store.retention import plan_retention, seq_of

DEFAULT_JOBS = 8

jobs_option = click.option(
    "--jobs", "-j", type=click.IntRange(1, 64), default=DEFAULT_JOBS, show_default=True,
    help="Files transferred at the same time.",
)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# -- URLs and files ------------------------------------------------------------------------
class Stores:
    """Opens the store URLs of one command; S3 stores share one boto3 session (making a
    session costs ~0.1 s, a client from an existing one almost nothing)."""

    def __init__(self) -> None:
        self._session = None

    def __call__(self, url: str) -> Store:
        if parse_store_url(url)[0] != "s3":
            return open_store(url)
        if self._session is None:
            from runctl.store.s3 import new_session

            self._session = new_session()
        return open_store(url, session=self._session)


def parent_and_name(url: str, stores: Stores) -> tuple[Store, str] | None:
    """The store holding the object ``url`` names, and its key there; None for a root."""
    scheme, location, prefix = parse_store_url(url)
    if scheme == "s3":
        parent, _, name = prefix.rpartition("/")
        return (stores(f"s3://{location}/{parent}"), name) if name else None
    path = Path(location).expanduser().resolve()
    return (stores(str(path.parent)), path.name) if path.name else None


def find_object(url: str, stores: Stores) -> tuple[Store, ObjectInfo] | None:
    """The single object ``url`` names, or None when it names no object (maybe a folder)."""
    located = parent_and_name(url, stores)
    if located is None:
        return None
    store, name = located
    for info in store.list(name):
        if info.key == name:
            return store, info
    return None


def local_files(folder: Path) -> dict[str, Path]:
    """Every regular file below ``folder``, by its '/'-separated relative path."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_file():
                found[path.relative_to(folder).as_posix()] = path
    return found


def run_parallel(app: App, description: str, tasks: Sequence[tuple[int, Callable[[ProgressCallback | None], None]]],
                 jobs: int) -> None:
    """Run ``(size, task)`` pairs on ``jobs`` threads under one progress bar; the first
    error cancels what has not started and is raised."""
    if not tasks:
        return
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    with app.output.progress(description, sum(size for size, _ in tasks)) as progress:
        pool = ThreadPoolExecutor(max_workers=min(jobs, len(tasks)), thread_name_prefix="runctl-s3")
        try:
            futures = [pool.submit(task, progress) for _, task in tasks]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    raise future.exception()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# -- commands --------------------------------------------------------------------------------
@click.group("s3")
def s3() -> None:
    """Upload, download, sync, list and clean up objects in a store.

    URL is s3://bucket/prefix or a local folder (a path or file:///abs/path). AWS
    credentials come from the usual places (aws configure, AWS_PROFILE, environment);
    AWS_ENDPOINT_URL points at another S3 service.
    """


@s3.command("upload")
@click.argument("local_path", type=click.Path(exists=True, path_type=Path))
@click.argument("url")
@jobs_option
@output_option
@pass_app
def upload(app: App, local_path: Path, url: str, jobs: int) -> None:
    """Upload a file or a folder (recursively) to URL.

    A file goes to URL itself, or into it under its own name when URL ends with '/'.
    A folder's files go below URL, keeping their relative paths.
    """
    stores = Stores()
    if local_path.is_dir():
        store = stores(url)
        items = list(local_files(local_path).items())
    elif url.endswith("/"):
        store, items = stores(url), [(local_path.name, local_path)]
    else:
        located = parent_and_name(url, stores)
        if located is None:
            raise UsageError(f"{url} names no object; give the object's URL or end it with '/'")
        store, key = located
        items = [(key, local_path)]
    sizes = {key: path.stat().st_size for key, path in items}

    def task(key: str, path: Path):
        return lambda progress: store.upload(path, key, progress=progress)

    run_parallel(app, f"upload to {store.url}", [(sizes[k], task(k, p)) for k, p in items], jobs)
    total = sum(sizes.values())
    app.output.report(
        {"url": store.url, "files": len(items), "bytes": total, "keys": [k for k, _ in items]},
        lambda: app.output.line(f"uploaded {plural(len(items), 'file')} ({human_size(total)}) to {store.url}"),
    )


@s3.command("download")
@click.argument("url")
@click.argument("local_path", type=click.Path(path_type=Path))
@jobs_option
@output_option
@pass_app
def download(app: App, url: str, local_path: Path, jobs: int) -> None:
    """Download the object or every object below URL to LOCAL_PATH.

    An object goes to LOCAL_PATH, or into it when LOCAL_PATH is a folder. A folder's
    objects go below LOCAL_PATH, keeping their relative keys.
    """
    stores = Stores()
    found = find_object(url, stores)
    if found is not None:
        store, info = found
        into_folder = local_path.is_dir() or str(local_path).endswith(("/", os.sep))
        items = [(info, local_path / info.key.rsplit("/", 1)[-1] if into_folder else local_path)]
    else:
        store = stores(url)
        objects = list(store.list())
        if not objects:
            raise NotFoundError(f"nothing to download: no object at or below {url}")
        target = local_path.resolve()
        items = []
        for info in objects:
            dest = (target / info.key).resolve()
            if not dest.is_relative_to(target):
                raise UsageError(f"refusing to download {store.url}/{info.key}: it would land outside {target}")
            items.append((info, dest))

    def task(info: ObjectInfo, dest: Path):
        return lambda progress: store.download(info.key, dest, progress=progress)

    run_parallel(app, f"download from {store.url}", [(i.size, task(i, d)) for i, d in items], jobs)
    total = sum(info.size for info, _ in items)
    app.output.report(
        {"url": url, "files": len(items), "bytes": total, "paths": [str(d) for _, d in items]},
        lambda: app.output.line(f"downloaded {plural(len(items), 'file')} ({human_size(total)}) to {local_path}"),
    )


@s3.command("sync")
@click.argument("local_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("url")
@click.option("--delete", "delete_extra", is_flag=True, help="Also delete objects below URL that LOCAL_DIR lacks.")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@jobs_option
@output_option
@pass_app
def sync(app: App, local_dir: Path, url: str, delete_extra: bool, dry_run: bool, jobs: int) -> None:
    """Upload the files of LOCAL_DIR that are missing below URL or differ in size."""
    store = Stores()(url)
    remote = {info.key: info.size for info in store.list()}
    local = local_files(local_dir)
    sizes = {key: path.stat().st_size for key, path in local.items()}
    changed = [key for key in local if remote.get(key) != sizes[key]]
    extra = sorted(set(remote) - set(local)) if delete_extra else []
    if not dry_run:
        def task(key: str):
            return lambda progress: store.upload(local[key], key, progress=progress)

        run_parallel(app, f"sync to {store.url}", [(sizes[k], task(k)) for k in changed], jobs)
        store.delete(extra)
    total = sum(sizes[k] for k in changed)
    unchanged = len(local) - len(changed)

    def text() -> None:
        verb, removed = ("would upload", "would delete") if dry_run else ("uploaded", "deleted")
        deleted = f", {removed} {plural(len(extra), 'object')}" if delete_extra else ""
        app.output.line(f"{verb} {plural(len(changed), 'file')} ({human_size(total)}){deleted}, "
                        f"{unchanged} unchanged: {store.url}")

    app.output.report(
        {"url": store.url, "uploaded": changed, "deleted": extra, "unchanged": unchanged, "bytes": total,
         "dry_run": dry_run},
        text,
    )


@s3.command("list")
@click.argument("url")
@output_option
@pass_app
def list_(app: App, url: str) -> None:
    """List the objects below URL (keys relative to it) with their sizes."""
    store = Stores()(url)
    objects = list(store.list())

    def text() -> None:
        if not objects:
            app.output.note(f"no objects below {store.url}")
            return
        total = sum(o.size for o in objects)
        app.output.table(["key", "size"], [(o.key, human_size(o.size)) for o in objects])
        app.output.line(f"{plural(len(objects), 'object')}, {human_size(total)} below {store.url}")

    app.output.report([{"key": o.key, "size": o.size} for o in objects], text)


# -- cleanup ---------------------------------------------------------------------------------
def last_segment(url: str) -> str:
    """The URL's last folder name ('' for a bucket or filesystem root)."""
    scheme, location, prefix = parse_store_url(url)
    if scheme == "s3":
        return prefix.rsplit("/", 1)[-1]
    return Path(location).expanduser().resolve().name


def checkpoint_prefixes(store: Store, url: str) -> list[str]:
    """The checkpoints folders (prefixes ending in '/') that the store at ``url`` stands
    for: itself, a job's, or every job's below a store root or its jobs/ folder."""
    last = last_segment(url)
    if last == "checkpoints":
        return [""]
    if last != "jobs":
        top = store.list_dirs("")
        if "checkpoints" in top:
            return ["checkpoints/"]
        if "jobs" not in top:
            raise NotFoundError(
                f"no checkpoints below {store.url}; give a store root, a job (.../jobs/ID) or its checkpoints folder"
            )
        return [f"jobs/{job}/checkpoints/" for job in store.list_dirs("jobs/")]
    return [f"{job}/checkpoints/" for job in store.list_dirs("")]


def cleanup_one(store: Store, prefix: str, keep_last_n: int, dry_run: bool) -> dict | None:
    """Apply retention to one checkpoints folder; None when it holds no snapshot."""
    by_seq: dict[str, list[ObjectInfo]] = {}
    for info in store.list(prefix):
        head, sep, _ = info.key[len(prefix):].partition("/")
        if sep and seq_of(head) is not None:  # only what lies inside checkpoints/<int>/
            by_seq.setdefault(head, []).append(info)
    if not by_seq:
        return None
    complete = [seq for seq, objs in by_seq.items() if any(o.key == f"{prefix}{seq}/{MANIFEST_NAME}" for o in objs)]
    plan = plan_retention(by_seq, complete, keep_last_n)
    doomed = [o for seq in plan.delete for o in by_seq[seq]]
    if not dry_run and doomed:
        # Manifests first: a snapshot interrupted half-way is then incomplete, never broken.
        manifests = [o.key for o in doomed if o.key.endswith(f"/{MANIFEST_NAME}")]
        store.delete(manifests)
        store.delete(o.key for o in doomed if not o.key.endswith(f"/{MANIFEST_NAME}"))
    return {
        "checkpoints": f"{store.url.rstrip('/')}/{prefix}".rstrip("/"),
        "kept": list(plan.keep),
        "deleted": list(plan.delete),
        "in_progress": list(plan.in_progress),
        "objects": len(doomed),
        "bytes": sum(o.size for o in doomed),
        "dry_run": dry_run,
    }


@s3.command("cleanup")
@click.argument("url")
@click.option("--keep-last-n", type=click.IntRange(min=1), required=True,
              help="How many complete checkpoint snapshots to keep per job.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@output_option
@pass_app
def cleanup(app: App, url: str, keep_last_n: int, dry_run: bool) -> None:
    """Delete old checkpoint snapshots below URL, keeping the newest KEEP_LAST_N complete ones.

    URL is a job (.../jobs/ID), its checkpoints folder, or a store root (every job in it).
    Only folders checkpoints/<seq>/ are touched: older complete snapshots go, and so do
    incomplete ones older than the newest complete snapshot. Nothing else is deleted.
    """
    store = Stores()(url)
    results = [r for p in checkpoint_prefixes(store, url) if (r := cleanup_one(store, p, keep_last_n, dry_run))]

    def text() -> None:
        if not results:
            app.output.note(f"no checkpoint snapshots below {store.url}")
        verb = "would delete" if dry_run else "deleted"
        for r in results:
            gone = f"{verb} {plural(len(r['deleted']), 'snapshot')}"
            if r["deleted"]:
                gone += f" ({', '.join(r['deleted'])}; {plural(r['objects'], 'object')}, {human_size(r['bytes'])})"
            kept = f"kept {len(r['kept'])}" + (f" ({', '.join(r['kept'])})" if r["kept"] else "")
            app.output.line(f"{r['checkpoints']}: {gone}, {kept}")

    app.output.report(results, text)
