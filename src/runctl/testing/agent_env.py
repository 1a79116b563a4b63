"""The fake cloud's instance environment: runctl and its dependencies, and nothing else.

On EC2 the bootstrap installs runctl's wheel into a fresh virtual environment, so a job
finds none of the packages of the user's own machine there. The fake cloud must be as
strict, or a script that imports a package only the user's venv has would succeed in the
fake cloud and fail on AWS. This builds that environment offline and in well under a
second: a venv without pip whose site-packages links to the installed files of runctl's
dependency closure only.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import runctl

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(root: str = "runctl") -> list[metadata.Distribution]:
    """``root``'s installed distribution and those it requires, transitively (extras left
    out; a requirement whose marker excludes this interpreter is simply not installed)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = _normalized(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for requirement in dist.requires or ():
            name_part, _, marker = requirement.partition(";")
            match = _NAME.match(name_part)
            if match and "extra" not in marker:
                todo.append(match.group(1))
    return list(seen.values())


def _top_level_entries(dist: metadata.Distribution) -> set[str]:
    """The site-packages entries a distribution installed: its packages, modules, .pth files
    and its .dist-info folder (files installed outside site-packages, scripts, left out)."""
    entries = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
    return entries - {"__pycache__"}  # shared by every top-level module: not one distribution's


def runctl_only_env(folder: Path, also: tuple[str, ...] = ()) -> Path:
    """Make (once) a venv at ``folder`` that can import runctl and its dependencies and
    nothing else of this machine's environment; return its python. ``also``: distributions
    the machine image has besides (an AMI with torch), with their dependencies."""
    python = folder / "bin" / "python"
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True,
                   capture_output=True)
    site_packages = next((folder / "lib").glob("python*/site-packages"))
    # runctl itself: the very package this process runs (an editable install or a copy
    # in a source tree may also carry metadata; the code is what matters).
    os.symlink(Path(runctl.__file__).parent, site_packages / "runctl")
    for dist in [*dependency_closure(), *(d for name in also for d in dependency_closure(name))]:
        if _normalized(dist.metadata["Name"]) == "runctl":
            continue
        for entry in _top_level_entries(dist):
            source = Path(str(dist.locate_file(entry)))
            link = site_packages / entry
            if source.exists() and not link.exists():
                os.symlink(source, link)
    # uv's binary, where an install puts it (the venv's bin): runctl builds jobs' environments with it.
    from uv import find_uv_bin

    os.symlink(find_uv_bin(), folder / "bin" / "uv")
    return python
