"""Ship an attempt's log file to the store in chunks, and read them back."""

from __future__ import annotations

import threading
from pathlib import Path

from runctl.store import layout


class LogShipper:
    """``node``: this machine's instance id when it is a machine of several other than the
    rendezvous host (whose log is the job's)."""

    def __init__(self, store, job_id: str, attempt: int, path: Path, *, node: str | None = None) -> None:
        self._store = store
        self._prefix = layout.logs_prefix(job_id, attempt, node)
        self._path = path
        self._offset = 0
        self._chunk = 0
        self._lock = threading.Lock()

    def skip_shipped(self) -> None:
        """Go on after the chunks already in the store, from the file's end: a machine of
        several may run two epochs under one attempt number, appending to one log file that
        its earlier shipper shipped (a new one would rewrite chunk 0 with all of it)."""
        with self._lock:
            self._chunk = sum(1 for o in self._store.list(self._prefix) if o.key.endswith(".log"))
            try:
                self._offset = self._path.stat().st_size
            except FileNotFoundError:
                self._offset = 0

    def ship(self) -> int:
        """Upload what was written since the last call as the next chunk. Returns its size."""
        with self._lock:
            try:
                with open(self._path, "rb") as f:
                    f.seek(self._offset)
                    data = f.read()
            except FileNotFoundError:
                return 0
            if not data:
                return 0
            self._store.write(f"{self._prefix}{self._chunk:06d}.log", data)
            self._offset += len(data)
            self._chunk += 1
            return len(data)


def log_chunks(store, job_id: str, attempt: int, node: str | None = None) -> list[str]:
    prefix = layout.logs_prefix(job_id, attempt, node)
    return [o.key for o in store.list(prefix) if o.key.endswith(".log")]


def attempts_with_logs(store, job_id: str, node: str | None = None) -> list[int]:
    prefix = f"{layout.job_prefix(job_id)}logs/" if node is None else f"{layout.node_logs_prefix(job_id)}{node}/"
    return sorted(int(name) for name in store.list_dirs(prefix) if name.isdigit())


def nodes_with_logs(store, job_id: str) -> list[str]:
    """The machines of a job of several, other than the host, that shipped a log."""
    return sorted(store.list_dirs(layout.node_logs_prefix(job_id)))


class LogFollower:
    """The job's log chunks not handed over yet: attempts from ``first_attempt`` on, or only
    ``attempt`` when given. Calling it writes the new chunks to ``sink`` (a binary stream)."""

    def __init__(self, store, job_id: str, first_attempt: int = 0, sink=None, *, attempt: int | None = None,
                 node: str | None = None) -> None:
        self.store, self.job_id, self.first_attempt, self.sink = store, job_id, first_attempt, sink
        self.attempt = attempt
        self.node = node  # another machine of a job of several than the host: its log
        self.shown: set[str] = set()

    def new_chunks(self) -> list[tuple[int, bytes]]:
        """(attempt, bytes) of every chunk uploaded since the last call, oldest first."""
        found = []
        for number in attempts_with_logs(self.store, self.job_id, self.node):
            if number < self.first_attempt or (self.attempt is not None and number != self.attempt):
                continue
            for key in log_chunks(self.store, self.job_id, number, self.node):
                if key not in self.shown:
                    self.shown.add(key)
                    found.append((number, self.store.read(key).data))
        return found

    def __call__(self) -> None:
        for _, data in self.new_chunks():
            self.sink.write(data)
            self.sink.flush()
