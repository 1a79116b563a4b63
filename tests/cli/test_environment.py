"""What the CLI says about the job's environment, and what it refuses before submitting."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from runctl.cli._environment import _with_python, declared
from runctl.cli._named import Invocation
from runctl.config import JobConfig
from runctl.errors import UsageError


def app_noting(lines: list[str]):
    return SimpleNamespace(output=SimpleNamespace(note=lines.append))


def test_nothing_declared_and_no_setup_is_no_environment(tmp_path):
    lines = []
    assert declared(app_noting(lines), Invocation("train.py", ()), root=tmp_path) is None
    assert lines == []


def test_the_one_line_and_the_record(tmp_path):
    (tmp_path / "requirements.txt").write_text("numpy\n")
    lines = []
    named = Invocation("train.py", (), JobConfig(setup=("make data",)), "train")
    record = declared(app_noting(lines), named, root=tmp_path, synced={"requirements.txt", "train.py"})
    assert record["kind"] == "requirements" and record["files"] == ("requirements.txt",)
    assert lines == ["runctl: environment: requirements.txt (uv pip install); setup: 1 command(s) of [jobs.train]"]


def test_a_declaration_file_left_out_of_the_code_is_refused(tmp_path):
    (tmp_path / "requirements.txt").write_text("numpy\n")
    with pytest.raises(UsageError, match="requirements.txt is ignored .* add --include requirements.txt"):
        declared(app_noting([]), Invocation("train.py", ()), root=tmp_path, synced={"train.py"})


def test_the_environments_python_runs_the_script():
    import sys

    assert _with_python([sys.executable, "t.py", "-x"], "/env/bin/python") == ["/env/bin/python", "t.py", "-x"]
    assert _with_python(["/u/uv", "run", "--script", "/p/t.py", "-x"], "/e/python") == ["/e/python", "/p/t.py", "-x"]
    assert _with_python(["./run.sh"], "/e/python") == ["./run.sh"]
