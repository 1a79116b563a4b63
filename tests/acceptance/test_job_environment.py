"""Issue 15 end to end in the fake cloud, through the real CLI: the job's environment is
built with uv from the project's declaration on the first instance, cached in the bucket,
and restored without resolving on the replacement after a spot notice.

The package the job needs is one this machine does not have: a wheel made by the test and
served from a --find-links folder (no network). The instances' agents run in an
environment with runctl only (``runctl.testing.agent_env``), so the package reaches the job
through the environment runctl builds, or not at all.
"""

from __future__ import annotations

import json

import pytest

from runctl.agent.status import read_status
from runctl.store import layout
from runctl.testing.wheels import make_wheel, offline_index
from .test_auto_resume import FAST_SYNC, final_result, job_store, reporting_progress, the_job
from waiting import wait_for

PROBE = "runctl_probe_pkg"
# Reads what its setup command wrote and imports the package only the environment has, then
# trains as training/train.py does (resumable, saving on SIGTERM).
PROBE_SCRIPT = f'''\
import runpy, sys
from pathlib import Path
import {PROBE}
print("probe", {PROBE}.VALUE, Path("made-by-setup.txt").read_text().strip(), flush=True)
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("training/train.py", run_name="__main__")
'''
SETUP = f"python -c \"import {PROBE}; open('made-by-setup.txt', 'w').write('setup-%d' % {PROBE}.VALUE)\""


@pytest.fixture
def wheels(tmp_path):
    folder = tmp_path / "wheels"
    make_wheel(folder, "runctl-probe-pkg", "1.0", {f"{PROBE}/__init__.py": "VALUE = 42\n"})
    return folder


@pytest.fixture
def offline(cloud, wheels):
    """Every instance's uv installs from the test's wheels only."""
    cloud.agent_environ.update(offline_index(wheels))


def test_the_environment_is_built_once_and_restored_on_the_replacement(cloud, project, offline, runctl, runctl_bg,
                                                                        straight_weights):
    with pytest.raises(ImportError):
        __import__(PROBE)  # not on this machine: only the job's environment can have it
    (project / "requirements.txt").write_text("runctl-probe-pkg==1.0\n")
    (project / "probe_train.py").write_text(PROBE_SCRIPT)
    (project / ".runctl.toml").write_text(f'[jobs.probe]\nscript = "probe_train.py"\nsetup = [{json.dumps(SETUP)}]\n')
    steps = 8000
    proc = runctl_bg("aws", "run", "probe", "--spot", "-t", "t3.micro", "--auto-resume", "--no-docker",
                     "--", "--steps", str(steps), "--checkpoint-every", "500", **FAST_SYNC)
    store = job_store(cloud)
    job_id = wait_for("the job", lambda: the_job(store), proc)
    first = wait_for("attempt 0 to make progress", lambda: reporting_progress(store, job_id, 0), proc, timeout=120)
    cloud.interrupt(first)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert "runctl: environment: requirements.txt (uv pip install); setup: 1 command(s) of [jobs.probe]" in err
    assert final_result(out) == {"final_step": steps, "weights_sha256": straight_weights(steps)}

    attempts = read_status(store, job_id).attempts
    assert [a.reason for a in attempts] == ["interrupted", "completed"]
    assert attempts[0].instance_id != attempts[1].instance_id
    assert attempts[0].environment.startswith("built in ") and "caching it in the background" in attempts[0].environment
    assert attempts[1].environment.startswith("restored in ")
    cached = sorted(o.key for o in store.list("envs/"))
    key = cached[0].removeprefix("envs/").removesuffix(".json")
    assert cached == [layout.env_record_key(key), layout.env_archive_key(key)]

    logs = [runctl("logs", job_id, "--attempt", str(n)) for n in (0, 1)]
    for shown in logs:
        assert shown.returncode == 0, shown.stderr
        assert "probe 42 setup-42" in shown.stdout  # the package and the setup's file, on both machines
    built, restored = logs[0].stdout, logs[1].stdout
    assert "uv pip install" in built and "$ python -c" in built and "environment built in" in built
    assert "environment restored in" in restored and "without resolving" in restored
    assert "runctl: $ " not in restored  # no uv command, no setup command: neither resolved nor set up again

    shown = runctl("status", job_id)
    assert shown.returncode == 0, shown.stderr
    assert "restored in" in shown.stdout and "built in" in shown.stdout, shown.stdout


def test_a_pep_723_script_gets_its_dependencies(cloud, project, offline, runctl):
    (project / "inline.py").write_text(f'# /// script\n# dependencies = ["runctl-probe-pkg"]\n# ///\n'
                                       f'import {PROBE}\nprint("inline", {PROBE}.VALUE)\n')
    done = runctl("aws", "run", "inline.py", "--no-docker", "--no-auto-resume", "--job-id", "inline", timeout=180)
    assert done.returncode == 0, done.stderr
    assert "runctl: environment: inline script metadata of inline.py (1 dependency)" in done.stderr
    assert "inline 42" in done.stdout
    attempt, = read_status(job_store(cloud), "inline").attempts
    assert attempt.reason == "completed" and attempt.environment.startswith("built in ")


def test_a_failing_setup_command_fails_the_job_once(cloud, project, offline, runctl):
    (project / "never.py").write_text("print('the script ran')\n")
    (project / ".runctl.toml").write_text('[jobs.broken]\nscript = "never.py"\n'
                                          'setup = ["echo fetching the data; echo dataset not found >&2; exit 7"]\n')
    done = runctl("aws", "run", "broken", "--spot", "--auto-resume", "--no-docker", "--job-id", "broken",
                  timeout=180)
    assert done.returncode == 1, done.stderr
    assert "the script ran" not in done.stdout and "Traceback" not in done.stderr
    store = job_store(cloud)
    status = read_status(store, "broken")
    assert status.state == "failed"
    assert "setup command 1 failed (exit 7)" in status.message and "dataset not found" in status.message
    attempt, = status.attempts  # once: not retried on the group's next instances
    assert (attempt.reason, attempt.exit_code) == ("failed", 7)
    shown = runctl("status", "broken")
    assert "dataset not found" in shown.stdout, shown.stdout
    logs = runctl("logs", "broken")
    assert "fetching the data" in logs.stdout and "dataset not found" in logs.stdout, logs.stdout + logs.stderr
    assert list(store.list("envs/")) == []  # nothing cached
    # The cloud fixture asserts that no group, template or instance is left.


def test_no_setup_runs_with_the_instances_interpreter(cloud, project, runctl):
    (project / "requirements.txt").write_text("runctl-absent-pkg\n")  # never installed: not even looked up
    (project / "where.py").write_text("import sys\nprint('python', sys.executable)\n")
    done = runctl("aws", "run", "where.py", "--no-setup", "--no-docker", "--no-auto-resume", "--job-id", "plain",
                  timeout=180)
    assert done.returncode == 0, done.stderr
    assert "runctl: environment:" not in done.stderr
    assert f"python {cloud.agent_python}" in done.stdout
    attempt, = read_status(job_store(cloud), "plain").attempts
    assert attempt.environment is None
