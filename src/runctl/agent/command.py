"""From what the user typed to the argv an attempt runs. Checks fail with one clear line."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from runctl.errors import UsageError

# PEP 723 inline script metadata: a "# /// script" block.
_INLINE_METADATA = re.compile(r"^# /// script\s*$.*?^# ///\s*$", re.MULTILINE | re.DOTALL)


def has_inline_metadata(script: Path) -> bool:
    try:
        return bool(_INLINE_METADATA.search(script.read_text(errors="replace")))
    except OSError:
        return False


def resolve_command(script: str, args: Sequence[str], *,
                    which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """``train.py`` runs with this interpreter (``uv run`` for PEP 723 scripts when uv is
    installed); anything else runs as a command, found as a path or on PATH."""
    path = Path(script)
    if script.endswith(".py"):
        if not path.is_file():
            raise UsageError(f"script not found: {script}")
        uv = which("uv")
        if uv and has_inline_metadata(path):
            return [uv, "run", "--script", str(path.resolve()), *args]
        return [sys.executable, str(path.resolve()), *args]
    found = str(path.resolve()) if os.sep in script else which(script)
    if found is None or not Path(found).exists():
        if path.exists():
            found = str(path.resolve())
        else:
            raise UsageError(f"command not found: {script} (not a file here, nor a program on PATH)")
    if Path(found).is_dir() or not os.access(found, os.X_OK):
        raise UsageError(f"{script} is not executable; chmod +x {script}, or run it with its interpreter")
    return [found, *args]
