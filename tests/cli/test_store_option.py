"""A --store that names no usable folder, or nothing at all, is refused with one line that
names the store and says what to give instead (exit 2), by every command that takes it."""

from __future__ import annotations

import pytest

from cli_output import one_line_error

COMMANDS = [
    ["run", "ok.py"],
    ["status"],
    ["status", "some-job"],
    ["logs", "some-job"],
    ["jobs"],
    ["checkpoint", "list", "--job", "some-job"],
]

NO_FOLDER = [
    ("/dev/null", "/dev/null is not a folder"),
    ("afile", "afile is not a folder"),
    ("afile/below", "afile/below is inside a file"),
    ("/proc/self", "/proc/self is in /proc"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
@pytest.mark.parametrize(("store", "expected"), NO_FOLDER, ids=[s for s, _ in NO_FOLDER])
def test_a_store_that_is_no_folder_is_one_line_and_exit_2(command, store, expected, runctl_cli, tmp_path):
    (tmp_path / "ok.py").write_text("print('ran')\n")
    (tmp_path / "afile").write_text("a file, not a folder")
    line = one_line_error(runctl_cli(*command, "--store", store))
    assert line.startswith("runctl: error: store ") and expected in line
    assert "s3://bucket/prefix" in line  # the fix: what to give instead
    assert (tmp_path / "afile").read_text() == "a file, not a folder"
    assert not (tmp_path / ".runctl" / "store").exists()  # not quietly the default store either


def test_s3_list_of_a_file_says_it_is_no_folder(runctl_cli, tmp_path):
    (tmp_path / "afile").write_text("a file, not a folder")
    line = one_line_error(runctl_cli("s3", "list", "afile"))
    assert "afile is not a folder" in line


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_an_empty_store_is_refused_not_taken_for_the_default(command, runctl_cli, tmp_path):
    """``--store "$STORE"`` with STORE unset: running on the default store instead would put
    the job somewhere the user did not ask for."""
    (tmp_path / "ok.py").write_text("print('ran')\n")
    line = one_line_error(runctl_cli(*command, "--store", ""))
    assert "--store is empty" in line and "leave --store out" in line
    assert not (tmp_path / ".runctl" / "store").exists()


@pytest.mark.parametrize("command", [["run", "ok.py"], ["jobs"]], ids=lambda c: " ".join(c))
def test_a_store_url_with_a_nul_byte_is_one_line_and_exit_2(command, runctl_cli, tmp_path):
    (tmp_path / "ok.py").write_text("print('ran')\n")
    line = one_line_error(runctl_cli(*command, "--store", "file:///tmp/a%00b"))
    assert "store URL 'file:///tmp/a%00b' holds a NUL character" in line


@pytest.mark.parametrize("command", [["aws", "run", "ok.py"], ["aws", "create"], ["aws", "watch", "j"],
                                     ["aws", "cancel", "j"], ["aws", "logs", "j"], ["aws", "cost", "j"]],
                         ids=lambda c: " ".join(c))
def test_the_aws_commands_refuse_an_empty_store_too(command, runctl_cli, tmp_path):
    (tmp_path / "ok.py").write_text("print('ran')\n")
    line = one_line_error(runctl_cli(*command, "--store", ""))
    assert "--store is empty" in line and "leave --store out" in line
