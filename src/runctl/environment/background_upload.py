"""The store's copy of a freshly built environment, made on a thread of its own, so the
first instance starts the job's script as soon as the environment is ready instead of after
packing and uploading it (10-15 s for torch).

Best-effort: the archive appears in the store only once complete (a create-only put is
atomic in both stores) and its record after it, so a machine lost mid-upload leaves no
cache that a later machine would use; a failure is logged and the job goes on (the next
machine builds again). The agent waits for it, up to a bound, before its machine powers
off at the job's end (``finish``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from runctl.environment import cache
from runctl.errors import RunctlError

log = logging.getLogger(__name__)

#: How long the agent waits at the job's end for an upload still running: packing and
#: sending a few GB at instance speeds takes a minute or two.
FINISH_WAIT_S = 600.0
#: In a built environment's one-line summary until the upload's outcome is known.
IN_BACKGROUND = "caching it in the background"


class BackgroundUpload:
    """``cache.upload(store, key, target, work_dir, record)``, started at once on a daemon
    thread (a stuck upload never keeps the agent's process alive)."""

    def __init__(self, store, key: str, target: Path, work_dir: Path, record: dict) -> None:
        self.key = key
        self.result: cache.Uploaded | None = None
        self.error: str | None = None
        self._args = (store, key, target, work_dir, record)
        self._thread = threading.Thread(target=self._run, name=f"env-upload-{key[:12]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = cache.upload(*self._args)
        except RunctlError as exc:
            self.error = str(exc)
        except Exception as exc:  # a bug or an unexpected OS error must not pass silently
            log.exception("environment %s: the upload to the store's cache failed", self.key)
            self.error = f"{type(exc).__name__}: {exc}"
        (log.warning if self.error else log.info)("environment %s: %s", self.key, self._ended())

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def outcome(self) -> str:
        """One line: cached (size, time), cached already by another machine, not cached (why), or running."""
        return "still uploading to the store's cache" if self.running else self._ended()

    def _ended(self) -> str:
        if self.result is None:
            return f"not cached: {self.error}"
        if not self.result.stored:
            return "cached already by another machine"
        return f"cached ({self.result.size / 1e6:.1f} MB in {self.result.seconds:.1f}s)"

    def finish(self, timeout: float = FINISH_WAIT_S) -> bool:
        """Wait up to ``timeout`` seconds for the upload; True once it ended (stored or not)."""
        self._thread.join(timeout)
        if self.running:
            log.warning("environment %s: the upload to the store's cache did not end within %.0fs; the machine "
                        "goes without it (the next machine builds the environment again)", self.key, timeout)
            return False
        return True
