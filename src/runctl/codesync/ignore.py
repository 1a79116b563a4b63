"""Which files of a project folder are its code (.gitignore, .runctlignore, --include), and
which files of a Docker build context count (.dockerignore): one matcher, one always-excluded list.

pathspec compiles every pattern (runctl has no glob matcher of its own); runctl only decides
which line names a path, the way git does (``_Line.names``), and
tests/codesync/test_ignore.py holds the walk to ``git ls-files`` over many ignore files.

In a git work tree the list comes from ``git ls-files --cached --others --exclude-standard``
(git's own ignore rules, nested .gitignore files and the global excludes included).
Elsewhere runctl walks the folder and reads every ``.gitignore`` on the way: each file's
patterns are relative to its folder, a deeper file overrides a shallower one, and an ignored
folder is not entered (so nothing below it can be brought back), as git does.

On top of either: ``.runctlignore`` in the project folder (same syntax) always applies;
``--include PATTERN`` brings back files that an ignore file left out; ``.git``, ``.runctl``,
``__pycache__`` and ``.venv`` folders are never code, nor part of a Docker content hash.

Symlinks: a link to a file inside the project counts as that file (its bytes are uploaded
under the link's path); a link to a folder inside it is not followed (the folder's files are
listed where they are). A link that leads out of the project, to a file or a folder, is never
followed: ``~/.aws/credentials`` linked into a project must not be uploaded. Such links are
named in ``ProjectFiles.skipped_links`` so that the user hears of them.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pathspec import PathSpec
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

log = logging.getLogger(__name__)

ALWAYS_EXCLUDED = frozenset({".git", ".runctl", "__pycache__", ".venv"})
RUNCTLIGNORE = ".runctlignore"


def always_excluded(rel: str) -> bool:
    """Whether a '/'-separated relative path lies in (or is) an always-excluded folder."""
    return any(part in ALWAYS_EXCLUDED for part in rel.split("/"))


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []


@dataclass(frozen=True)
class _Line:
    """One pattern line of the ignore file in ``folder`` ('' = the project), compiled by pathspec."""

    folder: str
    anchored: bool  # git matches it against the path from ``folder``; else against the name alone
    pattern: GitIgnoreSpecPattern

    def names(self, rel: str, is_dir: bool) -> bool:
        """Whether the line names ``rel`` itself (git's test: what is below a folder is the walk's business).

        pathspec's regex for a line also matches everything below what the line names; a
        full match on the path, or a match on the bare name, leaves exactly git's test."""
        if self.folder:
            if not rel.startswith(self.folder + "/"):
                return False
            rel = rel[len(self.folder) + 1:]
        if not self.anchored:
            name = rel.rsplit("/", 1)[-1]
            return self.pattern.match_file(name + "/" if is_dir else name) is not None
        return self.pattern.regex.fullmatch(rel + "/" if is_dir else rel) is not None


def _lines(text_lines: list[str], folder: str) -> list[_Line]:
    """An ignore file's pattern lines. A line with a '/' before its end is anchored (git's
    rule). pathspec compiles an anchored ``a/**`` to "starts with a/", which names the folder
    ``a`` itself in a full match, so it becomes ``a/**/*`` (the same paths to git); and
    ``**``, ``/**`` or ``**/*`` name every path, as the bare ``*`` does."""
    found = []
    for line in text_lines:
        if not line.strip() or line.startswith("#"):
            continue
        negated = "!" if line.startswith("!") else ""
        body = line[len(negated):]
        body = body if body.endswith("\\ ") else body.rstrip(" ")
        if not body.strip("/"):
            continue  # nothing left to match (``!`` or ``/`` alone): git skips it too
        dir_mark = "/" if body.endswith("/") else ""
        core = re.sub(r"(?:\*\*/)+\*\*", "**", body.rstrip("/"))
        anchored = "/" in core
        if anchored and core.lstrip("/") in ("**", "**/*"):
            core, anchored = "*", False
        elif anchored and core.endswith("/**"):
            core += "/*"
        try:
            pattern = GitIgnoreSpecPattern(negated + core + dir_mark)
        except (ValueError, re.error):  # a trailing '\' or a range such as [z-a]: git never matches it
            log.debug("ignoring the pattern %r in %s", line, folder or "the project folder")
            continue
        if pattern.include is not None:
            found.append(_Line(folder, anchored, pattern))
    return found


@dataclass(frozen=True)
class IgnoreFiles:
    """The ignore files that apply in one folder: their lines, shallower files first, so that
    the last line naming a path decides, as in git (a deeper file overrides a shallower one)."""

    lines: tuple[_Line, ...] = ()

    def with_file(self, path: Path, folder: str = "") -> IgnoreFiles:
        added = _lines(_read_lines(path), folder)
        return IgnoreFiles((*self.lines, *added)) if added else self

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether ``rel`` itself is ignored, for a walk that does not enter ignored folders."""
        for line in reversed(self.lines):
            if line.names(rel, is_dir):
                return bool(line.pattern.include)
        return False

    def ignored_with_parents(self, rel: str) -> bool:
        """Whether ``rel`` or one of its folders is ignored: for a path found without a walk."""
        parts = rel.split("/")
        return any(self.ignored("/".join(parts[:depth]), depth < len(parts)) for depth in range(1, len(parts) + 1))


def _walk(folder: Path, ignores: IgnoreFiles | None) -> list[str]:
    """Regular files and symlinks below ``folder`` (symlinked folders are not entered); with
    ``ignores``, prune what they ignore, reading nested .gitignore files on the way."""
    found: list[str] = []

    def visit(rel_dir: str, active: IgnoreFiles | None) -> None:
        here = folder / rel_dir if rel_dir else folder
        if active is not None:
            active = active.with_file(here / ".gitignore", rel_dir)
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
            if active is not None and active.ignored(rel, is_dir):
                continue
            if is_dir:
                visit(rel, active)
            elif entry.is_file() or entry.is_symlink():
                found.append(rel)

    visit("", ignores)
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
        listed = _walk(folder, IgnoreFiles())
    runctl_ignores = IgnoreFiles().with_file(folder / RUNCTLIGNORE)
    chosen = {rel for rel in listed if not always_excluded(rel) and not runctl_ignores.ignored_with_parents(rel)}
    if include:
        # The same matcher read the other way round: what the lines would ignore comes back.
        wanted = IgnoreFiles(tuple(_lines(include, "")))
        chosen.update(rel for rel in _walk(folder, None) if wanted.ignored_with_parents(rel))
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


def dockerignore(root: Path) -> PathSpec:
    """``root/.dockerignore`` as a spec over paths relative to ``root``: ``match_file(rel)``
    says whether Docker leaves the file ``rel`` out of the build context.

    Docker's syntax differs from git's in three ways, each translated here: every line is
    anchored at the context root (``*.log`` is only the top folder's logs), a line is
    cleaned as a path (``./a/``, ``a/`` and ``a`` are one line, naming a file or a folder),
    and a ``!`` line can bring back a file below an excluded folder: Docker checks a path
    and its folders against every line, the last matching line winning. A plain
    ``PathSpec`` does exactly that, since pathspec's patterns match what is below what they
    name (a ``GitIgnoreSpec`` would let a line naming the file beat a later line naming
    its folder).
    """
    patterns = []
    for line in _read_lines(root / ".dockerignore"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        path = posixpath.normpath(line[1:].strip() if negated else line).lstrip("/")
        if path in ("", "."):
            continue
        try:
            patterns.append(GitIgnoreSpecPattern(("!/" if negated else "/") + path))
        except (ValueError, re.error):
            log.debug("ignoring the .dockerignore line %r", line)
    return PathSpec(patterns)
