"""The agent's periodic action: run every interval on its own thread, never after stop."""

from __future__ import annotations

import threading
import time

from runctl.agent.periodic import Periodic


def test_the_action_runs_every_interval_until_stopped():
    ran = threading.Semaphore(0)
    calls = []

    def action() -> None:
        calls.append(1)
        ran.release()

    periodic = Periodic(0.01, action)
    periodic.start()
    for _ in range(3):
        assert ran.acquire(timeout=10)
    periodic.stop()
    after = len(calls)
    time.sleep(0.1)
    assert len(calls) == after  # nothing runs once stop returned


def test_stop_before_start_does_not_wait():
    Periodic(60.0, lambda: None).stop()
