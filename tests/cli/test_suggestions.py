"""Typos and misplaced script options: click's suggestion, and the command line as it should be."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("argv, suggestion", [
    (["statsu"], "Did you mean 'status'?"),
    (["aws", "trian"], "Did you mean 'train'?"),
    (["aws", "cancle"], "Did you mean 'cancel'?"),
    (["checkpoint", "lsit"], "Did you mean 'list'?"),
])
def test_a_mistyped_command_gets_a_suggestion(runctl_cli, argv, suggestion):
    done = runctl_cli(*argv)
    assert done.returncode == 2
    assert f"No such command {argv[-1]!r}. {suggestion}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_command_far_from_any_gets_no_guess(runctl_cli):
    done = runctl_cli("zzz")
    assert done.returncode == 2
    assert "No such command 'zzz'." in done.stderr and "Did you mean" not in done.stderr


def test_script_options_after_the_script_show_the_corrected_command_line(runctl_cli, tmp_path):
    (tmp_path / "train.py").write_text("raise SystemExit('must not run')\n")
    done = runctl_cli("run", "train.py", "--steps", "3", "--rehearse", "2", "--lr=0.1", "--name", "a b",
                      "--", "--seed", "1")
    assert done.returncode == 2
    assert ("runctl run train.py --rehearse 2 -- --steps 3 --lr=0.1 --name 'a b' --seed 1"
            in done.stderr), done.stderr
    assert not (tmp_path / ".runctl").exists()  # nothing ran


def test_the_same_for_aws_run(runctl_cli):
    done = runctl_cli("aws", "run", "train.py", "--spot", "--epochs", "2")
    assert done.returncode == 2
    assert "runctl aws run train.py --spot -- --epochs 2" in done.stderr, done.stderr


def test_an_unknown_option_before_the_script_is_not_moved(runctl_cli):
    done = runctl_cli("run", "--steps", "3", "train.py")
    assert done.returncode == 2
    assert "No such option '--steps'" in done.stderr
    assert " -- " not in done.stderr.split("No such option", 1)[1]
