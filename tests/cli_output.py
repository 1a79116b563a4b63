"""Reading what a command printed, in tests that run the CLI or an example as a user would."""

from __future__ import annotations

import json
import subprocess


def one_line_error(done: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single stderr line of a command that refused its input with ``code``: nothing on
    stdout, no traceback."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert done.stdout == ""
    return lines[0]


def json_line(stdout: str, first_key: str) -> dict:
    """The one JSON line of ``stdout`` that starts with ``first_key``, e.g. train.py's
    ``{"final_step": ...}``."""
    lines = [line for line in stdout.splitlines() if line.startswith('{"' + first_key + '"')]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])
