"""A store wrapper that fails chosen calls the way a network does, for fencing tests.

``FaultyStore(store)`` behaves as ``store`` until told otherwise::

    faulty.inject("write", key="jobs/j/lease.json", when="after", error=PreconditionFailed("412"))

makes the next write of that key land and then raise, as when the response to a PUT was lost
and the client's retry was answered 412 by our own write. ``when="before"`` raises without
calling the store (the request never arrived). ``times`` is how many matching calls fail
(None: every one, until ``clear()``). ``calls`` records (method, key, outcome) of every call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runctl.errors import StoreError

#: The Store methods a fault can target, with how to find the key a call is about.
_KEY_OF: dict[str, Callable[[tuple, dict], str]] = {
    "read": lambda a, k: a[0] if a else k["key"],
    "write": lambda a, k: a[0] if a else k["key"],
    "upload": lambda a, k: a[1] if len(a) > 1 else k["key"],
    "download": lambda a, k: a[0] if a else k["key"],
    "copy": lambda a, k: a[1] if len(a) > 1 else k["dst_key"],
    "list": lambda a, k: a[0] if a else k.get("prefix", ""),
    "list_dirs": lambda a, k: a[0] if a else k["prefix"],
    "exists": lambda a, k: a[0] if a else k["key"],
    "delete": lambda a, k: ",".join(a[0] if a else k["keys"]),
}


@dataclass
class Fault:
    method: str
    key: str | None  # the key must contain this; None: any key
    when: str  # "before": the call never reaches the store; "after": it lands, then fails
    error: Exception
    times: int | None  # matching calls still to fail; None: all of them


class FaultyStore:
    """Any Store, with faults injected into chosen calls. Thread-safe."""

    def __init__(self, store) -> None:
        self.inner = store
        self.calls: list[tuple[str, str, str]] = []  # (method, key, "ok" | "failed before" | "failed after")
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def inject(self, method: str, *, key: str | None = None, when: str = "after",
               error: Exception | None = None, times: int | None = 1) -> Fault:
        if method not in _KEY_OF:
            raise ValueError(f"cannot inject into {method!r}; one of {sorted(_KEY_OF)}")
        if when not in ("before", "after"):
            raise ValueError(f"when must be 'before' or 'after', not {when!r}")
        fault = Fault(method, key, when, error or StoreError(f"{method} {key or ''}: connection reset (injected)"),
                      times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take(self, method: str, key: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and (fault.key is None or fault.key in key):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _record(self, method: str, key: str, outcome: str) -> None:
        with self._lock:
            self.calls.append((method, key, outcome))

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name not in _KEY_OF:
            return target

        def call(*args, **kwargs):
            key = _KEY_OF[name](args, kwargs)
            fault = self._take(name, key)
            if fault is not None and fault.when == "before":
                self._record(name, key, "failed before")
                raise fault.error
            result = target(*args, **kwargs)
            if fault is not None:
                self._record(name, key, "failed after")
                raise fault.error
            self._record(name, key, "ok")
            return result

        return call
