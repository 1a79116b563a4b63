"""The hash cache's file: what lets a restarted agent trust the hashes of files it hashed
before (``HashCache(file=...)``), so that its first commit reads only what changed.

One JSON document per line: a header, then ``[path, size, mtime_ns, inode, ctime_ns,
sha256]`` per file. An entry is trusted only while all of its keys hold (``HashCache``):
ctime cannot be set back by a tool that puts a file's mtime back, so a change in place shows.
The file lives with the agent's private files, never in the checkpoint folder. It is a cache:
a file that is missing, unreadable or not in this format is ignored (everything is hashed
again), and a failure to write it is logged, never raised.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from runctl.fsutil import temp_name_beside

log = logging.getLogger(__name__)

FORMAT = "runctl.hashes/1"
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")

#: path -> (size, mtime_ns, inode, ctime_ns, sha256)
Entry = tuple[int, int, int, int, str]


def _valid(row) -> bool:
    return (isinstance(row, list) and len(row) == 6 and isinstance(row[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in row[1:5])
            and isinstance(row[5], str) and bool(_SHA256.match(row[5])))


def load_hashes(path: Path) -> dict[str, Entry]:
    """The entries of the cache file at ``path``; {} when there is none or it is not ours."""
    entries: dict[str, Entry] = {}
    try:
        with open(path, encoding="utf-8") as f:
            if json.loads(f.readline() or "null") != {"format": FORMAT}:
                return {}
            for line in f:
                row = json.loads(line)
                if not _valid(row):
                    log.debug("ignoring the hash cache %s: an entry is not in its format", path)
                    return {}
                entries[row[0]] = tuple(row[1:])
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.debug("ignoring the hash cache %s: %s", path, exc)
        return {}
    return entries


def save_hashes(path: Path, entries: Iterable[tuple[str, Entry]]) -> None:
    """Replace the cache file at ``path`` with ``entries`` (written to a temporary name,
    then renamed: a reader sees the old file or the new one)."""
    temp = temp_name_beside(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"format": FORMAT}) + "\n")
            for name, entry in entries:
                f.write(json.dumps([name, *entry], ensure_ascii=False) + "\n")
        os.replace(temp, path)
    except (OSError, UnicodeEncodeError) as exc:
        log.warning("could not save the hash cache %s (the next agent hashes the files again): %s", path, exc)
        try:
            os.unlink(temp)
        except OSError:
            pass
