"""The agent's own signals: SIGTERM (the machine or a supervisor stops us) and Ctrl-C.

The first SIGINT or SIGTERM asks for a graceful stop; a second SIGINT means "kill now".

Python runs a signal handler in the main thread between any two bytecodes, also while that
thread is inside ``poll()`` or inside the handler itself. So the handler takes no lock (the
thread would wait for itself forever): notices go through a ``queue.SimpleQueue``, whose
``put`` is reentrant.
"""

from __future__ import annotations

import queue
import signal
import time
from collections.abc import Callable

from runctl.models import InterruptionNotice

_HANDLED = (signal.SIGINT, signal.SIGTERM)


class SignalSource:
    """InterruptionSource for SIGINT and SIGTERM. Constructing it changes nothing; ``start()``
    (main thread only) installs its handlers, ``close()`` puts the previous ones back.
    ``clock`` stamps the notices."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._notices: queue.SimpleQueue[InterruptionNotice] = queue.SimpleQueue()
        self._interrupts = 0
        self._previous: dict[int, object] = {}

    def start(self) -> None:
        """Install the handlers; again is a no-op."""
        if not self._previous:
            self._previous = {signum: signal.signal(signum, self._on_signal) for signum in _HANDLED}

    def _on_signal(self, signum: int, _frame) -> None:
        now = self._clock()
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts == 1:
                notice = InterruptionNotice("user", "stop-job", now, detail="Ctrl-C", restartable=False)
            else:
                notice = InterruptionNotice("user", "kill", now, detail="Ctrl-C twice", restartable=False)
        else:
            notice = InterruptionNotice("signal", "terminate", now, detail="the agent received SIGTERM",
                                        restartable=False)
        self._notices.put(notice)

    def attempt_started(self, attempt: int, now: float) -> None:
        self.start()  # a source handed to the agent unstarted still watches while the script runs

    def poll(self, now: float) -> InterruptionNotice | None:
        try:
            return self._notices.get_nowait()
        except queue.Empty:
            return None

    @property
    def stop_requested(self) -> bool:
        return self._interrupts > 0

    def close(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> SignalSource:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
