"""resolve_command: from what the user typed to the argv an attempt runs."""

from __future__ import annotations

import sys

import pytest

from runctl.agent.command import has_inline_metadata, resolve_command
from runctl.errors import UsageError

PEP723 = "# /// script\n# dependencies = []\n# ///\nprint('hi')\n"


@pytest.fixture(autouse=True)
def _here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def no_uv(name):
    return None


def test_a_python_script_runs_with_this_interpreter(tmp_path):
    (tmp_path / "train.py").write_text("print(1)\n")
    argv = resolve_command("train.py", ["--steps", "5"], which=no_uv)
    assert argv == [sys.executable, str(tmp_path / "train.py"), "--steps", "5"]


def test_a_pep723_script_runs_with_uv_when_installed(tmp_path):
    (tmp_path / "tool.py").write_text(PEP723)
    assert has_inline_metadata(tmp_path / "tool.py")
    argv = resolve_command("tool.py", ["a"], which=lambda name: "/opt/uv" if name == "uv" else None)
    assert argv == ["/opt/uv", "run", "--script", str(tmp_path / "tool.py"), "a"]
    # Without uv: this interpreter, as for any script.
    assert resolve_command("tool.py", [], which=no_uv)[0] == sys.executable


def test_without_metadata_uv_is_not_used(tmp_path):
    (tmp_path / "plain.py").write_text("# // script\nprint(1)\n")
    assert resolve_command("plain.py", [], which=lambda name: "/opt/uv")[0] == sys.executable


def test_a_missing_script(tmp_path):
    with pytest.raises(UsageError, match="script not found: nope.py"):
        resolve_command("nope.py", [])
    (tmp_path / "dir.py").mkdir()
    with pytest.raises(UsageError, match="script not found"):
        resolve_command("dir.py", [])


def test_an_executable_by_path(tmp_path):
    tool = tmp_path / "run.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert resolve_command("./run.sh", ["x"]) == [str(tool), "x"]
    assert resolve_command("run.sh", ["x"], which=no_uv) == [str(tool), "x"]  # not on PATH, but here


def test_a_program_on_path():
    assert resolve_command("true", [], which=lambda name: "/usr/bin/true" if name == "true" else None) == [
        "/usr/bin/true"]


@pytest.mark.parametrize("typed", ["./noexec", "noexec"])
def test_a_file_without_the_x_bit(tmp_path, typed):
    (tmp_path / "noexec").write_text("#!/bin/sh\n")
    (tmp_path / "noexec").chmod(0o644)
    with pytest.raises(UsageError, match=f"{typed} is not executable; chmod \\+x"):
        resolve_command(typed, [], which=no_uv)


def test_a_folder_is_not_a_command(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(UsageError, match="not executable"):
        resolve_command("./adir", [])


def test_an_unknown_command():
    with pytest.raises(UsageError, match="command not found: no-such-tool"):
        resolve_command("no-such-tool", [], which=no_uv)


def test_arguments_pass_through_untouched(tmp_path):
    (tmp_path / "t.py").write_text("")
    args = ["", "--", "a b", "$(rm -rf /)", "ü\n"]
    assert resolve_command("t.py", args, which=no_uv)[2:] == args
