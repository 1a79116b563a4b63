"""The .gitignore reading used outside a git work tree lists exactly what git lists.

Property: for any set of ignore lines, in the project folder and in nested folders,
``project_files(use_git=False)`` (runctl walking the folder) equals
``project_files(use_git=True)`` (``git ls-files`` deciding) on the same tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runctl.codesync import project_files

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="no git")

FILES = ("a/b/c.txt", "a/b/d.log", "a/c.txt", "a/e", "a/b/e/f", "a/.hidden", "b/a/c.txt", "b/b/b.txt", "b/d.log",
         "c.txt", "d.log", "e", "e.txt/z", "x/a/b", ".hidden")
# Lines chosen to hit the corners of gitignore: anchoring, '**' at each end and inside,
# folder-only lines, negation (which cannot bring a file back from an ignored folder),
# classes, escapes, trailing spaces, and lines git skips.
LINES = ("*.txt", "a/", "/a", "a/*", "!a/b", "**/b", "a/**", "a/**/", "a/**/c.txt", "?", "[ab]", "[!a]", "!*.log",
         "b/c.txt", "*.log", "!a/c.txt", "b", "/b/", "!b/", "e", "!e", "a/b/", "!a/b/e/f", "**/e", "*/c.txt",
         "!**/d.log", "b/**/b.txt", "x/", "!x/a/b", ".*", "!.hidden", "e.txt", "**", "!**", "*", "!/e", "a/b",
         "b/*", "!b/d.log", "*.txt/", "/**/b", "**/", "*/", "!**/", "!*/", "/*", "/*/", "!/*/", "!a/**", "/**",
         "[a-c].txt", "\\*", "c.txt ", "d.log\\ ", "***", "**/b/*", "*.[tl]*", "b/**/**", "a/b/**/", "e*/",
         "[]a]", "[!]a]", "**/a/**", "x/**/b", "#c.txt", "\\#x", "a//b", "!", "!/", "\\", "a\\")
GIT_ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}

ignore_files = st.fixed_dictionaries(
    {"": st.lists(st.sampled_from(LINES), min_size=1, max_size=5)},
    optional={"a": st.lists(st.sampled_from(LINES), min_size=1, max_size=3),
              "a/b": st.lists(st.sampled_from(LINES), min_size=1, max_size=3)})


def make_tree(root: Path, ignores: dict[str, list[str]]) -> None:
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    for folder, lines in ignores.items():
        (root / folder / ".gitignore").write_text("\n".join(lines) + "\n")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ignores=ignore_files)
def test_the_walk_lists_what_git_lists(ignores):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "proj"
        make_tree(root, ignores)
        walked = project_files(root, use_git=False).files
        subprocess.run(["git", "init", "-q", str(root)], check=True, env=GIT_ENV)
        assert walked == project_files(root, use_git=True).files, ignores


def test_a_class_opening_with_a_bracket_is_read_as_git_reads_it(tmp_path):
    """The hand-written matcher before pathspec raised re.error on ``[!]a]``."""
    make_tree(tmp_path, {"": ["[!]a]"]})
    # Names of one character other than ']' and 'a' are ignored; the folder a stays.
    assert project_files(tmp_path, use_git=False).files == [
        ".gitignore", ".hidden", "a/.hidden", "a/c.txt", "c.txt", "d.log"]


def test_include_lines_use_the_same_matcher(tmp_path):
    make_tree(tmp_path, {"": ["*"]})
    files = project_files(tmp_path, ["a/**/*.txt", "/e", "!e"], use_git=False).files
    assert files == ["a/b/c.txt", "a/c.txt"]  # the last line naming e wins: it stays out
