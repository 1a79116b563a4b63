"""The same runctl as the CLI, for the instance: a wheel of the running package, in the store.

``build_wheel()`` zips the files of the imported ``runctl`` package (``__pycache__`` left
out) with a ``.dist-info`` (METADATA, WHEEL, entry_points.txt, RECORD) into a pure-Python
``runctl-<version>-py3-none-any.whl``. The zip is reproducible (sorted names, fixed
timestamps), so the same code gives the same bytes and the same content hash, also from an
editable install with local changes: what the instance runs is what this CLI runs.

``publish_wheel(store)`` uploads it under ``dist/<content-hash>/runctl-...whl`` unless that
key is there already and returns a presigned URL (12 h by default) that the user-data
bootstrap downloads it from. The URL is a time-limited read of that one object only: no
credential is written anywhere (the instance reads everything else with its role).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from runctl.store import layout

log = logging.getLogger(__name__)

DIST_NAME = "runctl"
WHEEL_TAG = "py3-none-any"
DEFAULT_URL_EXPIRY_S = 12 * 3600
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: reproducible archives
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Wheel:
    filename: str  # runctl-<version>-py3-none-any.whl
    data: bytes
    sha256: str  # of ``data``

    @property
    def key(self) -> str:
        """Where it lives in the store: content-addressed, so versions never clash."""
        return layout.wheel_key(f"{self.sha256[:20]}/{self.filename}")


@dataclass(frozen=True)
class PublishedWheel:
    filename: str
    key: str
    url: str  # presigned (S3) or file:// (a local store)
    sha256: str
    uploaded: bool  # False: the store had it already


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def requirements(dist: str = DIST_NAME) -> list[str]:
    """The distribution's Requires-Dist lines, without those of optional extras."""
    try:
        found = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return []
    return [req for req in found if not re.search(r"""\bextra\s*==""", req)]


def _metadata_text(version: str) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {DIST_NAME}", f"Version: {version}"]
    try:
        found = metadata.metadata(DIST_NAME)
    except metadata.PackageNotFoundError:
        found = None
    if found is not None:
        for field in ("Summary", "Requires-Python", "License-Expression"):
            if found.get(field):
                lines.append(f"{field}: {found[field]}")
    lines.extend(f"Requires-Dist: {req}" for req in requirements())
    return "\n".join(lines) + "\n"


def _entry_points_text() -> str | None:
    try:
        return metadata.distribution(DIST_NAME).read_text("entry_points.txt")
    except metadata.PackageNotFoundError:
        return None


def package_files(package_dir: Path) -> list[tuple[str, Path]]:
    """(archive name, file) of every file of the package folder, sorted; caches left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(_SKIP_SUFFIXES):
                continue
            path = Path(dirpath, name)
            if not path.is_file():
                continue
            rel = path.relative_to(package_dir.parent).as_posix()
            found.append((rel, path))
    return sorted(found)


def build_wheel(package_dir: Path | None = None, version: str | None = None) -> Wheel:
    """A wheel of the runctl package this process runs (or of ``package_dir``). Pure but
    for reading the package's files and installed metadata."""
    import runctl

    package_dir = Path(package_dir or Path(runctl.__file__).parent)
    version = version or runctl.__version__
    dist_info = f"{DIST_NAME}-{version}.dist-info"
    entries: list[tuple[str, bytes, int]] = []
    for name, path in package_files(package_dir):
        mode = 0o755 if os.access(path, os.X_OK) else 0o644
        entries.append((name, path.read_bytes(), mode))
    entries.append((f"{dist_info}/METADATA", _metadata_text(version).encode(), 0o644))
    wheel_text = f"Wheel-Version: 1.0\nGenerator: runctl ({version})\nRoot-Is-Purelib: true\nTag: {WHEEL_TAG}\n"
    entries.append((f"{dist_info}/WHEEL", wheel_text.encode(), 0o644))
    entry_points = _entry_points_text()
    if entry_points:
        entries.append((f"{dist_info}/entry_points.txt", entry_points.encode(), 0o644))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data, _mode in entries:
        writer.writerow((name, _record_hash(data), len(data)))
    record_name = f"{dist_info}/RECORD"
    writer.writerow((record_name, "", ""))
    entries.append((record_name, record.getvalue().encode(), 0o644))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    data = buffer.getvalue()
    return Wheel(f"{DIST_NAME}-{version}-{WHEEL_TAG}.whl", data, hashlib.sha256(data).hexdigest())


def publish_wheel(store, *, wheel: Wheel | None = None, expires_s: int = DEFAULT_URL_EXPIRY_S) -> PublishedWheel:
    """Put the wheel in the store (only when it is not there yet) and presign a read of it."""
    wheel = wheel or build_wheel()
    uploaded = False
    if not store.exists(wheel.key):
        store.write(wheel.key, wheel.data)
        uploaded = True
        log.info("uploaded %s (%d bytes) to %s/%s", wheel.filename, len(wheel.data), store.url, wheel.key)
    url = store.presign(wheel.key, expires_s=expires_s)
    return PublishedWheel(wheel.filename, wheel.key, url, wheel.sha256, uploaded)
