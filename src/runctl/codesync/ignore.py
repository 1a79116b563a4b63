"""Which files of a project folder are its code: .gitignore, .runctlignore and --include.

In a git work tree the list comes from ``git ls-files --cached --others --exclude-standard``
(git's own ignore rules, nested .gitignore files and the global excludes included).
Elsewhere a small reader of ``.gitignore`` files applies the common subset of their syntax:
comments, ``!`` negation, a trailing ``/`` for folders, a leading or inner ``/`` anchoring
the pattern to the file's folder, ``*``, ``?``, ``[...]`` and ``**``.

On top of either: ``.runctlignore`` in the project folder (same syntax) always applies;
``--include PATTERN`` brings back files that an ignore file left out; ``.git``, ``.runctl``,
``__pycache__`` and ``.venv`` folders are never code.

Symlinks: a link to a file inside the project counts as that file (its bytes are uploaded
under the link's path); a link to a folder inside it is not followed (the folder's files are
listed where they are). A link that leads out of the project, to a file or a folder, is never
followed: ``~/.aws/credentials`` linked into a project must not be uploaded. Such links are
named in ``ProjectFiles.skipped_links`` so that the user hears of them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

ALWAYS_EXCLUDED = frozenset({".git", ".runctl", "__pycache__", ".venv"})
RUNCTLIGNORE = ".runctlignore"


@lru_cache(maxsize=512)
def _regex(glob: str) -> re.Pattern:
    """A gitignore glob (no leading '/') as a regex over a '/'-separated path."""
    out, i, n = [], 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("/**", i) and i + 3 == n:
            out.append("/.*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = glob.find("]", i + 2 if glob[i + 1:i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = glob[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@dataclass(frozen=True)
class Rule:
    """One line of an ignore file, relative to the folder ``base`` ('' = the project)."""

    pattern: str
    base: str = ""
    negated: bool = False
    dir_only: bool = False
    anchored: bool = False

    @classmethod
    def parse(cls, line: str, base: str = "") -> Rule | None:
        line = line.rstrip("\n").rstrip("\r")
        if not line.strip() or line.startswith("#"):
            return None
        if not line.endswith("\\ "):
            line = line.rstrip(" ")
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        elif line.startswith("\\!") or line.startswith("\\#"):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            return None
        anchored = "/" in line
        return cls(line.lstrip("/"), base, negated, dir_only, anchored)

    def matches(self, path: str, is_dir: bool) -> bool:
        """Whether this rule names ``path`` itself (not its folders)."""
        if self.dir_only and not is_dir:
            return False
        if self.base:
            if not path.startswith(self.base + "/"):
                return False
            path = path[len(self.base) + 1:]
        target = path if self.anchored else path.rsplit("/", 1)[-1]
        return bool(_regex(self.pattern).match(target))


def read_rules(path: Path, base: str = "") -> list[Rule]:
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    return [rule for line in text.splitlines() if (rule := Rule.parse(line, base)) is not None]


def ignored(rules: Sequence[Rule], path: str, is_dir: bool) -> bool:
    """gitignore semantics: the last matching rule wins; a file in an ignored folder stays
    ignored (callers do not descend into ignored folders)."""
    verdict = False
    for rule in rules:
        if rule.matches(path, is_dir):
            verdict = not rule.negated
    return verdict


def matches_any(patterns: Sequence[str], path: str) -> bool:
    """Whether an --include pattern names ``path`` or one of its folders."""
    rules = [r for p in patterns if (r := Rule.parse(p)) is not None]
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        is_dir = depth < len(parts)
        if any(rule.matches(prefix, is_dir) for rule in rules):
            return True
    return False


def _always_excluded(rel: str) -> bool:
    return any(part in ALWAYS_EXCLUDED for part in rel.split("/"))


def _walk(folder: Path, rules: list[Rule] | None, read_nested: bool) -> list[str]:
    """Regular files and symlinks below ``folder`` (symlinked folders are not entered); with
    ``rules``, prune what they ignore, reading nested .gitignore files if asked."""
    found: list[str] = []

    def visit(rel_dir: str, active: list[Rule] | None) -> None:
        here = folder / rel_dir if rel_dir else folder
        if active is not None and read_nested:
            active = active + read_rules(here / ".gitignore", rel_dir)
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", here, exc.strerror)
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.name in ALWAYS_EXCLUDED:
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            if active is not None and ignored(active, rel, is_dir):
                continue
            if is_dir:
                visit(rel, active)
            elif entry.is_file() or entry.is_symlink():
                found.append(rel)

    visit("", rules)
    return found


def _git_files(folder: Path) -> list[str] | None:
    """The files git does not ignore, relative to ``folder``; None when not in a work tree."""
    if shutil.which("git") is None:
        return None
    try:
        inside = subprocess.run(["git", "-C", str(folder), "rev-parse", "--is-inside-work-tree"],
                                capture_output=True, text=True, timeout=30)
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        listed = subprocess.run(["git", "-C", str(folder), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard", "--", "."], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("git ls-files failed in %s (%s); reading .gitignore files instead", folder, exc)
        return None
    if listed.returncode != 0:
        log.warning("git ls-files failed in %s: %s", folder, listed.stderr.decode(errors="replace").strip())
        return None
    names = {os.fsdecode(name) for name in listed.stdout.split(b"\0") if name}
    # Deleted files and submodules: skip. Symlinks stay, for project_files to judge.
    return sorted(name for name in names if (folder / name).is_file() or (folder / name).is_symlink())


@dataclass(frozen=True)
class ProjectFiles:
    """'/'-separated paths relative to the project folder, sorted."""

    files: list[str]  # the code files, links to files within the project included
    skipped_links: list[str]  # links that lead out of the project: never followed


def project_files(folder: Path, include: Iterable[str] = (), *, use_git: bool = True) -> ProjectFiles:
    """The project's code files, and the links out of the project left out (see the module docstring)."""
    folder = Path(folder)
    include = [p for p in include if p and p.strip()]
    listed = _git_files(folder) if use_git else None
    if listed is None:
        listed = _walk(folder, [], read_nested=True)
    runctl_rules = read_rules(folder / RUNCTLIGNORE)
    chosen = {rel for rel in listed if not _always_excluded(rel) and not _ignored_with_parents(runctl_rules, rel)}
    if include:
        chosen.update(rel for rel in _walk(folder, None, read_nested=False) if matches_any(include, rel))
    root = os.path.realpath(folder)
    files, skipped = [], []
    for rel in sorted(chosen):
        # realpath, not Path.resolve: it does not raise on a link loop.
        target = os.path.realpath(folder / rel)
        if os.path.commonpath([root, target]) != root:
            skipped.append(rel)
        elif os.path.isfile(target):
            files.append(rel)
        # else a link to a folder within the project, or a dangling link: nothing to send
    return ProjectFiles(files, skipped)


def _ignored_with_parents(rules: Sequence[Rule], rel: str) -> bool:
    """Whether ``rel`` or one of its folders is ignored by ``rules``."""
    if not rules:
        return False
    parts = rel.split("/")
    for depth in range(1, len(parts) + 1):
        if ignored(rules, "/".join(parts[:depth]), depth < len(parts)):
            return True
    return False
