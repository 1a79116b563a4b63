"""Which environment a project declares, found in a fixed order and said in one line. Pure
but for reading the project's few declaration files.

Order: ``uv.lock`` or ``pyproject.toml`` (a uv project: ``uv sync``), ``requirements.txt``
(``uv pip install -r``), PEP 723 inline metadata in the script (its ``dependencies``), none.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from runctl.errors import ConfigError
from runctl.models import Record

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - runctl depends on tomli there
    import tomli as tomllib

KINDS = ("uv-project", "requirements", "inline", "none")
# PEP 723: a "# /// script" block of "#"-prefixed lines closed by "# ///".
_INLINE_BLOCK = re.compile(r"^# /// script\s*\n(?P<body>(?:^#(?: .*)?\n)*?)^# ///\s*$", re.MULTILINE)


@dataclass(frozen=True)
class EnvSource(Record):
    """What the project declares. ``files``: the declaration files, relative to the
    project, whose bytes are the environment's inputs; ``python``: the version request
    (e.g. ">=3.10", "3.12"), "" when the project asks for none."""

    kind: str = "none"
    files: tuple[str, ...] = ()
    python: str = ""
    dependencies: tuple[str, ...] = ()  # PEP 723 only: the script's dependencies
    script: str = ""  # PEP 723 only: the script holding them

    @classmethod
    def from_dict(cls, data: dict) -> EnvSource:
        found = super().from_dict(data)
        return cls(found.kind, tuple(found.files), found.python, tuple(found.dependencies), found.script)

    def describe(self) -> str:
        """The one line runctl says about it."""
        python = f", Python {self.python}" if self.python else ""
        if self.kind == "uv-project":
            how = "uv sync" if "uv.lock" in self.files else "uv pip install"
            return f"environment: {' + '.join(self.files)} ({how}{python})"
        if self.kind == "requirements":
            return f"environment: {self.files[0]} (uv pip install{python})"
        if self.kind == "inline":
            count = len(self.dependencies)
            return (f"environment: inline script metadata of {self.script} ({count} "
                    f"dependenc{'y' if count == 1 else 'ies'}{python})")
        return "environment: none declared (no uv.lock, pyproject.toml, requirements.txt or inline metadata)"


def inline_metadata(text: str, where: str = "the script") -> dict | None:
    """The PEP 723 ``script`` block of a script's text as a table, or None when it has none."""
    found = _INLINE_BLOCK.search(text)
    if found is None:
        return None
    body = "".join(line[2:] if line.startswith("# ") else line[1:] for line in found["body"].splitlines(True))
    try:
        return tomllib.loads(body)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the inline script metadata of {where} is not valid TOML: {exc}; fix its "
                          "\"# /// script\" block") from exc


def _python_version_file(root: Path) -> str:
    try:
        return (root / ".python-version").read_text().strip().splitlines()[0].strip()
    except (OSError, IndexError):
        return ""


def _requires_python(pyproject: Path) -> str:
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{pyproject.name} cannot be read as TOML ({exc}); fix it, or remove it to use "
                          "requirements.txt") from exc
    return str(data.get("project", {}).get("requires-python", "") or "")


def detect(root: Path, script: str | None = None) -> EnvSource:
    """The environment the project at ``root`` declares; ``script``: the job's script,
    relative to ``root``, whose inline metadata counts when nothing else is declared."""
    pinned = _python_version_file(root)
    if (root / "uv.lock").is_file() or (root / "pyproject.toml").is_file():
        files = tuple(name for name in ("pyproject.toml", "uv.lock", ".python-version") if (root / name).is_file())
        python = pinned or (_requires_python(root / "pyproject.toml") if (root / "pyproject.toml").is_file() else "")
        return EnvSource("uv-project", files, python)
    if (root / "requirements.txt").is_file():
        files = ("requirements.txt", *((".python-version",) if pinned else ()))
        return EnvSource("requirements", files, pinned)
    if script and script.endswith(".py") and (root / script).is_file():
        metadata = inline_metadata((root / script).read_text(errors="replace"), script)
        if metadata is not None:
            dependencies = metadata.get("dependencies", [])
            if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
                raise ConfigError(f"the inline script metadata of {script}: dependencies must be a list of "
                                  "strings, e.g. dependencies = [\"numpy\"]")
            return EnvSource("inline", (), str(metadata.get("requires-python", "") or ""), tuple(dependencies),
                             script)
    return EnvSource()
