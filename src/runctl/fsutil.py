"""Small file-system helpers shared by the store, the agent and the in-script API."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

#: Part of every temporary name runctl writes; snapshots never capture such files.
TEMP_MARKER = ".runctl-tmp-"


def temp_name_beside(path: Path) -> Path:
    """A unique hidden temporary name in the same folder as ``path`` (same file system)."""
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_temp_name(name: str) -> bool:
    return TEMP_MARKER in name
