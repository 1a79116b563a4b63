"""A job id with a trailing newline is refused like any other bad job id."""

from __future__ import annotations

from cli_output import one_line_error


def test_run_refuses_a_job_id_with_a_trailing_newline(runctl_cli, tmp_path):
    (tmp_path / "ok.py").write_text("print('ran')\n")
    line = one_line_error(runctl_cli("run", "ok.py", "--job-id", "job\n"))
    assert "invalid --job-id" in line
    assert not (tmp_path / ".runctl" / "store" / "jobs").exists()


def test_checkpoint_list_refuses_a_job_with_a_trailing_newline(runctl_cli):
    line = one_line_error(runctl_cli("checkpoint", "list", "--job", "job\n"))
    assert "is not a job id" in line
