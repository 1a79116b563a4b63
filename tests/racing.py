"""Making store writers race for certain, for tests of conditional writes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


class ReadTogether:
    """A store whose first read of ``key`` in each thread waits until ``parties`` threads
    have read it: all of them then write on what they read, a race every time."""

    def __init__(self, inner, key: str, parties: int) -> None:
        self.inner = inner
        self._key = key
        self._barrier = threading.Barrier(parties, timeout=60)
        self._seen = threading.local()

    def read(self, key):
        try:
            return self.inner.read(key)
        finally:
            if key == self._key and not getattr(self._seen, "done", False):
                self._seen.done = True
                self._barrier.wait()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def in_threads(calls) -> list:
    """Each of ``calls`` in a thread of its own, at once; their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result(timeout=120) for f in [pool.submit(call) for call in calls]]
