"""Ship an attempt's log file to the store in chunks, and read them back."""

from __future__ import annotations

import threading
from pathlib import Path

from runctl.store import layout


class LogShipper:
    def __init__(self, store, job_id: str, attempt: int, path: Path) -> None:
        self._store = store
        self._prefix = layout.logs_prefix(job_id, attempt)
        self._path = path
        self._offset = 0
        self._chunk = 0
        self._lock = threading.Lock()

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


def log_chunks(store, job_id: str, attempt: int) -> list[str]:
    prefix = layout.logs_prefix(job_id, attempt)
    return [o.key for o in store.list(prefix) if o.key.endswith(".log")]


def attempts_with_logs(store, job_id: str) -> list[int]:
    return sorted(int(name) for name in store.list_dirs(f"{layout.job_prefix(job_id)}logs/") if name.isdigit())
