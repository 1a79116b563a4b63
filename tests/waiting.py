"""Waiting in tests for something a background runctl process brings about."""

from __future__ import annotations

import time

import pytest


def wait_for(what: str, predicate, proc=None, timeout: float = 60.0, interval: float = 0.1, output=None):
    """``predicate()``'s first truthy value; fails the test when ``proc`` (a Popen; None: no
    process to watch) exits first, showing its output, or when ``timeout`` passes.

    ``output``: a callable giving the text to show of the process, for one whose pipes
    something else reads (shown at the timeout too). Without it, ``proc.communicate()``'s
    output is shown when the process exits (nothing for pipes it does not have)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            if output is not None:
                shown = output()
            else:
                out, err = proc.communicate()
                shown = f"{out}\n{err}"
            pytest.fail(f"runctl exited ({proc.returncode}) while waiting for {what}:\n{shown}")
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}" + (f":\n{output()}" if output is not None else ""))
