"""Waiting in tests for something a background runctl process brings about."""

from __future__ import annotations

import time

import pytest


def wait_for(what: str, predicate, proc=None, timeout: float = 60.0, interval: float = 0.1):
    """``predicate()``'s first truthy value; fails the test when ``proc`` (a Popen with text
    pipes; None: no process to watch) exits first, showing its output, or when ``timeout``
    passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"runctl exited ({proc.returncode}) while waiting for {what}:\n{out}\n{err}")
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what}")
