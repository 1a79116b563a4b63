"""runctl.agent.torchrun: the argv of a job run under torchrun, what "auto" means, and the
checks that make a wrong job one clear line (not a torchrun traceback on the first attempt)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from runctl.agent.torchrun import (check_torch, count_gpus, launch_command, multinode_torchrun_argv, parse_nproc,
                                   resolve_nproc, split_python, torchrun_argv)
from runctl.errors import UsageError

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.mark.parametrize("given, stored", [("2", "2"), (8, "8"), (" 4 ", "4"), ("AUTO", "auto"), ("auto", "auto"),
                                           ("01", "1")])
def test_parse_nproc(given, stored):
    assert parse_nproc(given) == stored


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", "", "auto2"])
def test_parse_nproc_refuses_what_is_no_count(bad):
    with pytest.raises(UsageError, match=r"--nproc-per-node .* is neither a number of processes .* nor auto"):
        parse_nproc(bad)


def test_auto_is_one_process_per_gpu_else_one(tmp_path):
    assert resolve_nproc("auto", gpus=lambda: 0) == 1
    assert resolve_nproc("auto", gpus=lambda: 4) == 4
    assert resolve_nproc("3", gpus=lambda: 4) == 3
    # The driver's folder, one entry per GPU; none on a machine without the driver.
    gpus = tmp_path / "gpus"
    assert count_gpus(gpus) == 0
    for bus in ("0000:00:1e.0", "0000:00:1f.0"):
        (gpus / bus).mkdir(parents=True)
    assert count_gpus(gpus) == 2


def test_the_argv_runs_the_script_under_the_launcher():
    argv = torchrun_argv(["/venv/bin/python3.11", "/p/train.py", "--steps", "5", "--", "-x"], 2, grace_period=90)
    python, flag, launcher, *rest = argv
    assert (python, flag) == ("/venv/bin/python3.11", "-c")
    assert rest == ["--standalone", "--nnodes", "1", "--nproc-per-node", "2", "/p/train.py", "--steps", "5", "--",
                    "-x"]
    # torchrun waits for its workers past runctl's grace, so the agent's SIGKILL decides.
    assert "'TORCH_ELASTIC_SHUTDOWN_TIMEOUT','95'" in launcher
    assert "sys.exit(128+int(e.sigval))" in launcher and "'PET_LOG_DIR',os.devnull" in launcher
    assert "'PET_SIGNALS_TO_HANDLE','SIGTERM,SIGINT,SIGHUP,SIGQUIT'" in launcher
    compile(launcher, "<launcher>", "exec")
    # A stop signal torchrun would not handle by itself is added to those it forwards.
    usr1 = torchrun_argv(["python", "t.py"], 2, grace_period=1, stop_signal="SIGUSR1")[2]
    assert "'PET_SIGNALS_TO_HANDLE','SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1'" in usr1
    assert "'TORCHELASTIC_SIGNALS_TO_HANDLE','SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1'" in usr1
    # A module run with -m goes through as torchrun's own -m.
    assert torchrun_argv(["python", "-m", "pkg.train", "--lr", "1"], 1, grace_period=0.5)[-4:] == [
        "-m", "pkg.train", "--lr", "1"]


def test_the_multinode_argv_meets_the_other_machines_at_the_hosts_c10d_rendezvous():
    argv = multinode_torchrun_argv(["/venv/bin/python", "/p/train.py", "--steps", "5"], 4, nnodes=3,
                                   endpoint="10.0.0.7:29400", job_id="job-1", epoch=2, is_host=False,
                                   grace_period=90, stop_signal="SIGUSR1")
    python, flag, launcher, *rest = argv
    assert (python, flag) == ("/venv/bin/python", "-c")
    assert rest == ["--nnodes", "3", "--nproc-per-node", "4", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                    "10.0.0.7:29400", "--rdzv-id", "job-1-2", "--rdzv-conf", "is_host=false", "--max-restarts", "0",
                    "/p/train.py", "--steps", "5"]
    # The same launcher as on one machine: the stop signal forwarded, exit code 128 + signal.
    assert launcher == torchrun_argv(["/venv/bin/python", "t.py"], 4, grace_period=90, stop_signal="SIGUSR1")[2]
    host = multinode_torchrun_argv(["python", "t.py"], 1, nnodes=2, endpoint="h:1", job_id="j", epoch=1,
                                   is_host=True, grace_period=1)
    assert host[host.index("--rdzv-conf") + 1] == "is_host=true"
    with pytest.raises(UsageError, match="needs the script first"):
        multinode_torchrun_argv(["python"], 1, nnodes=2, endpoint="h:1", job_id="j", epoch=1, is_host=True,
                                grace_period=1)


@pytest.mark.parametrize("command, why", [
    (["/usr/bin/uv", "run", "--script", "/p/train.py"], "the job runs /usr/bin/uv"),
    (["/p/train.sh", "--steps", "3"], "the job runs /p/train.sh"),
    ([], "the job runs nothing"),
    (["python"], "needs the script first"),
    (["python", "-u", "train.py"], "needs the script first"),
    (["python", "-m"], "needs the script first"),
])
def test_only_a_python_script_runs_under_torchrun(command, why):
    with pytest.raises(UsageError, match=why):
        split_python(command)


def test_without_nproc_the_command_runs_as_it_is():
    command = ["python", "train.py"]
    assert launch_command(command, None, grace_period=90) == command


def test_torch_is_looked_for_in_the_jobs_interpreter(tmp_path):
    check_torch(sys.executable)  # the test venv has torch
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # a real interpreter without torch
    python = str(bare / "bin" / "python")
    with pytest.raises(UsageError, match=rf"torch is not installed for {python}; install it there"):
        launch_command([python, "train.py"], "2", grace_period=90)
    with pytest.raises(UsageError, match="cannot run /no/such/python"):
        check_torch("/no/such/python")


def test_the_check_does_not_import_torch():
    """Looking for torch must cost a Python start, not the seconds of importing torch."""
    seen = []

    def run(argv, **kwargs):
        seen.append(argv)
        return subprocess.run(argv, **kwargs)

    check_torch(sys.executable, run=run)
    (argv,) = seen
    assert "import torch" not in argv[-1] and "find_spec('torch')" in argv[-1]


def test_a_container_job_is_not_checked_on_the_host():
    argv = launch_command(["/no/such/python", "train.py"], "auto", grace_period=10, check=False, gpus=lambda: 0)
    assert argv[0] == "/no/such/python" and argv[argv.index("--nproc-per-node") + 1] == "1"


def test_the_agent_and_the_cli_never_import_torch():
    """The agent may run where torch is not installed (the job's own interpreter has it)."""
    code = ("import sys, runctl.agent.torchrun, runctl.cli._torchrun, runctl.agent.supervisor; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC}).returncode == 0
