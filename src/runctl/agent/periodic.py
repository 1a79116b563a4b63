"""An action run every few seconds on a thread of its own, until stopped: the agent's
heartbeat (lease renewal, status.json) and its per-attempt housekeeping."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Periodic:
    def __init__(self, interval: float, action: Callable[[], None]) -> None:
        self._interval = interval
        self._action = action
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="agent-housekeeping")

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._action()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
