"""The agent's own signals: SIGTERM (the machine or a supervisor stops us) and Ctrl-C.

The first SIGINT or SIGTERM asks for a graceful stop; a second SIGINT means "kill now".
"""

from __future__ import annotations

import signal
import threading

from runctl.models import InterruptionNotice


class SignalSource:
    def __init__(self) -> None:
        self._pending: list[InterruptionNotice] = []
        self._lock = threading.Lock()
        self._interrupts = 0
        self._previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:
        import time

        now = time.time()
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts == 1:
                notice = InterruptionNotice("user", "stop-job", now, detail="Ctrl-C", restartable=False)
            else:
                notice = InterruptionNotice("user", "kill", now, detail="Ctrl-C twice", restartable=False)
        else:
            notice = InterruptionNotice("signal", "terminate", now, detail="the agent received SIGTERM",
                                        restartable=False)
        with self._lock:
            self._pending.append(notice)

    def attempt_started(self, attempt: int, now: float) -> None:
        pass

    def poll(self, now: float) -> InterruptionNotice | None:
        with self._lock:
            return self._pending.pop(0) if self._pending else None

    @property
    def stop_requested(self) -> bool:
        return self._interrupts > 0

    def close(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
