"""A built environment in the store: packed once by the instance that built it, restored
by every later one (a replacement, the next job with the same inputs) instead of resolving.

``envs/<key>.tar.gz`` holds the environment folder (gzip, level 1: packing speed matters
more than a few percent of size); ``envs/<key>.json``, written after it, says its size and
sha256. Both are written create-only: of two instances that built the same environment,
the first to upload wins and the other's upload is dropped. A restore unpacks the archive
as it downloads (``stream_unpack``); one whose record is missing or whose bytes do not
match it is not used.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from runctl.environment.stream_unpack import unpack_stream
from runctl.errors import IntegrityError, NotFoundError, PreconditionFailed, StoreError
from runctl.fsutil import TEMP_MARKER, temp_name_beside
from runctl.store import layout
from runctl.store.hashing import sha256_file

#: Written last in a complete environment folder: its key and how it came to be.
MARK = ".runctl-env.json"


@dataclass(frozen=True)
class Uploaded:
    size: int
    seconds: float
    stored: bool  # False: another instance had uploaded it first


#: Machine-specific, rewritten on every machine (``build.link_runctl``): never archived.
_LOCAL_ONLY = ("runctl-link", "_runctl_in_script_api.pth")


def pack(target: Path, archive: Path, *, level: int = 1) -> None:
    """``target``'s files into ``archive`` (its mark and the machine's runctl link left
    out: a restore writes its own). The job's script may run meanwhile and write into the
    environment (``__pycache__`` files, through a temporary name): a file gone between
    listing and reading is skipped rather than failing the upload."""
    with tarfile.open(archive, "w:gz", compresslevel=level) as tar:
        for path in _files_of(target):
            try:
                info = tar.gettarinfo(path, path.relative_to(target).as_posix())
                if not info.isreg():
                    tar.addfile(info)
                    continue
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            except FileNotFoundError:
                continue


def _files_of(target: Path):
    """Every folder, file and link under ``target``, a folder before what it holds."""
    for root, dirs, files in os.walk(target):
        folder = Path(root)
        if folder != target:
            yield folder
        kept = sorted(d for d in dirs if d not in _LOCAL_ONLY and TEMP_MARKER not in d)
        yield from (folder / d for d in kept if (folder / d).is_symlink())  # a link, not walked into
        dirs[:] = [d for d in kept if not (folder / d).is_symlink()]
        yield from (folder / name for name in sorted(files)
                    if TEMP_MARKER not in name and name not in _LOCAL_ONLY and not (folder == target and name == MARK))


def upload(store, key: str, target: Path, work_dir: Path, record: dict) -> Uploaded:
    """Pack ``target`` (in ``work_dir``, removed after) and put it in the store, create-only."""
    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    archive = work_dir / f"{key}.tar.gz{TEMP_MARKER}{os.getpid()}"
    try:
        try:
            pack(target, archive)
        except OSError as exc:  # a disk full; a file the running script rewrote while it was read
            raise StoreError(f"cannot pack the environment {target.name}: {exc}") from exc
        size = archive.stat().st_size
        try:
            store.upload(archive, layout.env_archive_key(key), if_none_match=True)
        except PreconditionFailed:
            return Uploaded(size, time.monotonic() - started, stored=False)
        entry = {**record, "key": key, "size": size, "sha256": sha256_file(archive), "created": time.time()}
        try:
            store.write(layout.env_record_key(key), json.dumps(entry, indent=1, sort_keys=True).encode(),
                        if_none_match=True)
        except PreconditionFailed:
            return Uploaded(size, time.monotonic() - started, stored=False)
        return Uploaded(size, time.monotonic() - started, stored=True)
    finally:
        archive.unlink(missing_ok=True)


def read_record(store, key: str) -> dict | None:
    """The record of the cached environment ``key``, or None when there is none (yet)."""
    try:
        return json.loads(store.read(layout.env_record_key(key)).data)
    except NotFoundError:
        return None
    except ValueError as exc:
        raise IntegrityError(f"{layout.env_record_key(key)} in {store.url} is not JSON; delete it to rebuild "
                             "the environment") from exc


def restore(store, key: str, record: dict, target: Path) -> float:
    """Unpack the archive ``record`` describes to ``target`` (absent) as it downloads,
    checking its bytes against the record, through a temporary folder beside it, so a
    half-unpacked one is never seen. Returns the seconds it took."""
    target.parent.mkdir(parents=True, exist_ok=True)
    unpacked = temp_name_beside(target)
    started = time.monotonic()
    archive_key = layout.env_archive_key(key)
    try:
        body = store.open_read(archive_key)
        try:
            unpack_stream(body, unpacked, f"{archive_key} in {store.url}", expect_size=record.get("size"),
                          expect_sha256=record.get("sha256"))
        finally:
            body.close()
        os.replace(unpacked, target)
        return time.monotonic() - started
    finally:
        if unpacked.exists():
            shutil.rmtree(unpacked, ignore_errors=True)
