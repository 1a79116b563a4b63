"""An instance of the fake cloud has runctl and nothing of the user's machine, as on EC2: a
script that imports a package only the user's venv has fails there, with the import error
in `runctl logs`, instead of succeeding in the fake cloud and failing on AWS."""

from __future__ import annotations

import json


def test_a_package_only_the_users_venv_has_is_missing_on_the_instance(cloud, project, runctl):
    import hypothesis  # in the venv that runs this test and the CLI: the user's machine

    assert hypothesis.__version__
    (project / "needs_hypothesis.py").write_text("import hypothesis\nprint('imported hypothesis')\n")
    done = runctl("aws", "run", "needs_hypothesis.py", "--no-docker", "--no-auto-resume", "--job-id", "needs-pkg",
                  timeout=180)
    assert done.returncode == 1, done.stderr
    assert "imported hypothesis" not in done.stdout
    logs = runctl("logs", "needs-pkg")
    assert logs.returncode == 0, logs.stderr
    assert "ModuleNotFoundError: No module named 'hypothesis'" in logs.stdout + logs.stderr
    status = json.loads(runctl("status", "needs-pkg", "--output", "json").stdout)
    assert status["state"] == "failed" and status["attempts"][-1]["exit_code"] == 1


def test_the_instance_runs_runctl_from_an_environment_of_its_own(cloud, project, runctl):
    (project / "where.py").write_text("import sys, runctl\nprint('python', sys.executable)\n")
    done = runctl("aws", "run", "where.py", "--no-docker", "--no-auto-resume", "--job-id", "where", timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"python {cloud.agent_python}" in done.stdout
