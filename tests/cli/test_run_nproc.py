"""``--nproc-per-node`` on ``runctl run``, refused before anything starts: one line, exit 2,
no job in the store (the option itself is runctl.cli._torchrun's; aws train's refusals are
in tests/cli/aws/test_train.py)."""

from __future__ import annotations

import venv

from cli_output import one_line_error


def test_bad_counts_other_commands_and_an_interpreter_without_torch_are_refused(runctl_cli, tmp_path):
    (tmp_path / "train.py").write_text("print('ran')\n")
    (tmp_path / "train.sh").write_text("#!/bin/sh\necho ran\n")
    (tmp_path / "train.sh").chmod(0o755)
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # a real interpreter without torch
    python = bare / "bin" / "python"

    for args, says in (
        (("train.py", "--nproc-per-node", "0"), "--nproc-per-node '0' is neither a number of processes"),
        (("train.py", "--nproc-per-node", "many"), "--nproc-per-node 'many' is neither a number of processes"),
        (("./train.sh", "--nproc-per-node", "2"), "starts a Python script under torchrun, but the job runs"),
        ((str(python), "--nproc-per-node", "2", "--", "train.py"), f"torch is not installed for {python}"),
    ):
        line = one_line_error(runctl_cli("run", *args))
        assert line.startswith("runctl: error: ") and says in line, line
    assert not (tmp_path / ".runctl" / "store" / "jobs").exists()  # nothing started


def test_one_process_is_still_torchrun(runctl_cli, tmp_path):
    """--nproc-per-node 1 runs the script under torchrun too (a script that calls
    init_process_group needs its variables)."""
    (tmp_path / "ranks.py").write_text("import os\nprint('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'])\n")
    done = runctl_cli("run", "ranks.py", "--nproc-per-node", "1", timeout=180)
    assert done.returncode == 0, done.stderr
    assert "rank 0 of 1" in done.stdout


def test_a_named_jobs_nproc_per_node_runs_it_under_torchrun_and_the_option_wins(runctl_cli, tmp_path):
    (tmp_path / "ranks.py").write_text("import os\nprint('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'])\n")
    (tmp_path / ".runctl.toml").write_text('[jobs.ranks]\nscript = "ranks.py"\nnproc_per_node = 2\n')
    by_name = runctl_cli("run", "ranks", timeout=180)
    assert by_name.returncode == 0, by_name.stderr
    assert sorted(line for line in by_name.stdout.splitlines() if line.startswith("rank")) == [
        "rank 0 of 2", "rank 1 of 2"]
    overridden = runctl_cli("run", "ranks", "--nproc-per-node", "1", "--job-id", "one", timeout=180)
    assert overridden.returncode == 0, overridden.stderr
    assert "rank 0 of 1" in overridden.stdout and "of 2" not in overridden.stdout


def test_a_named_jobs_bad_nproc_per_node_is_refused_by_config(runctl_cli, tmp_path):
    (tmp_path / "ranks.py").write_text("print('ran')\n")
    (tmp_path / ".runctl.toml").write_text('[jobs.ranks]\nscript = "ranks.py"\nnproc_per_node = "many"\n')
    line = one_line_error(runctl_cli("run", "ranks"))
    assert line == (f"runctl: error: jobs.ranks.nproc_per_node in {tmp_path / '.runctl.toml'}:3 must be a number of "
                    'processes (1, 2, 8 ...) or "auto" (one per GPU, else one), got "many"')
