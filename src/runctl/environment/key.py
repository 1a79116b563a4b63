"""The cache key of a built environment: a hash of every input it depends on. Pure.

Two instances (or two jobs) whose inputs hash the same share one cached environment:
the declaration files' bytes (lock, pyproject, requirements, .python-version), the
dependencies of inline metadata, the Python asked for (or the interpreter used when the
project asks none), the platform, and the setup commands. Not in the key, so keep them
stable per bucket: the package index uv is pointed at (UV_INDEX_URL, UV_FIND_LINKS ...) and
files a requirements file pulls in with ``-r``/``-c``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from runctl.environment.detect import EnvSource

#: Bumped when the layout of a built environment changes, so old archives are not reused.
FORMAT = "runctl-env-1"


def environment_key(source: EnvSource, file_bytes: Mapping[str, bytes], *, python: str, platform: str,
                    setup: Sequence[str] = ()) -> str:
    """The key (hex, 32 characters) of the environment ``source`` declares. ``file_bytes``:
    the content of each of ``source.files``; ``python``: the version request, or the
    interpreter's own version when there is none; ``platform``: the machine's (``platform_tag``)."""
    inputs = {
        "format": FORMAT,
        "kind": source.kind,
        "files": {name: hashlib.sha256(file_bytes[name]).hexdigest() for name in sorted(source.files)},
        "dependencies": list(source.dependencies),
        "python": python,
        "platform": platform,
        "setup": list(setup),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def platform_tag(system: str, machine: str, libc: tuple[str, str]) -> str:
    """The platform part of the key: OS, CPU and C library (a wheel built for glibc 2.34
    may not load on an older one). ``libc``: ``platform.libc_ver()``."""
    name, version = libc
    return f"{system.lower()}-{machine.lower()}" + (f"-{name}{version}" if name else "")
