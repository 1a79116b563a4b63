"""runctl run --setup: the job runs in the project's environment, built with uv (offline
here, from a folder of wheels made by the test), then found built on the next run; without
--setup the current interpreter runs it as always. A [jobs.NAME] with setup commands runs
by name; a failing setup command fails the run with its output on stderr."""

from __future__ import annotations

import json
import sys

import pytest

from runctl.testing.wheels import make_wheel, offline_index

PROBE_SCRIPT = """\
import json, sys
from pathlib import Path
import runctl, runctl_probe_pkg
made = Path("made.txt")
print(json.dumps({"value": runctl_probe_pkg.VALUE, "python": sys.executable,
                  "made": made.read_text() if made.exists() else None,
                  "checkpoints": str(runctl.checkpoint_dir())}))
"""
INLINE = '# /// script\n# dependencies = ["runctl-probe-pkg"]\n# ///\n' + PROBE_SCRIPT


@pytest.fixture
def env(tmp_path, cli_env):
    wheels = tmp_path.parent / f"{tmp_path.name}-wheels"
    make_wheel(wheels, "runctl-probe-pkg", "1.0", {"runctl_probe_pkg/__init__.py": "VALUE = 42\n"})
    return {**cli_env, **offline_index(wheels), "RUNCTL_HOME": str(tmp_path.parent / f"{tmp_path.name}-home")}


def printed(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def test_requirements_and_a_named_job_with_setup(runctl_cli, tmp_path, env):
    (tmp_path / "requirements.txt").write_text("runctl-probe-pkg==1.0\n")
    (tmp_path / "probe.py").write_text(PROBE_SCRIPT)
    (tmp_path / ".runctl.toml").write_text(
        '[jobs.probe]\nscript = "probe.py"\nsetup = ["python -c \\"open(\'made.txt\', \'w\').write(\'by setup\')\\""]\n')
    plain = runctl_cli("run", "probe", env=env)
    assert plain.returncode == 1 and "No module named 'runctl_probe_pkg'" in plain.stderr  # this interpreter

    first = runctl_cli("run", "probe", "--setup", env=env)
    assert first.returncode == 0, first.stderr
    assert "runctl: environment: requirements.txt (uv pip install); setup: 1 command(s) of [jobs.probe]" in first.stderr
    assert "environment built in" in first.stderr
    assert "runctl: environment cached (" in first.stderr  # locally the upload ends before the script starts
    shown = printed(first.stdout)
    assert shown["value"] == 42 and shown["made"] == "by setup" and shown["python"] != sys.executable

    again = runctl_cli("run", "probe", "--setup", env=env)
    assert again.returncode == 0, again.stderr
    assert "environment present on this machine already" in again.stderr and "runctl: $ " not in again.stderr
    status = json.loads(runctl_cli("status", "--output", "json", env=env).stdout)
    assert status["attempts"][-1]["environment"].startswith("present")


def test_inline_script_metadata(runctl_cli, tmp_path, env):
    (tmp_path / "probe.py").write_text(INLINE)
    done = runctl_cli("run", "probe.py", "--setup", env=env)
    assert done.returncode == 0, done.stderr
    assert "inline script metadata of probe.py (1 dependency)" in done.stderr
    assert printed(done.stdout)["value"] == 42


def test_a_failing_setup_command_fails_the_run(runctl_cli, tmp_path, env):
    (tmp_path / "probe.py").write_text(PROBE_SCRIPT)
    (tmp_path / ".runctl.toml").write_text('[jobs.probe]\nscript = "probe.py"\n'
                                           'setup = ["echo fetching data; echo no such dataset >&2; exit 4"]\n')
    done = runctl_cli("run", "probe", "--setup", env=env)
    assert done.returncode == 1, done.stderr
    assert "no such dataset" in done.stderr and "Traceback" not in done.stderr
    assert "setup command 1 failed (exit 4)" in done.stderr.splitlines()[-1]
