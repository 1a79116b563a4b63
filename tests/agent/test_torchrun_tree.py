"""A job under torchrun (``runctl run --nproc-per-node 2``), through the real CLI, with real
processes and signals: every rank gets the job's RUNCTL_* variables and the stop signal (the
interrupt file already written), both ranks' checkpoints reach the store, torchrun's exit
code says SIGTERM; a rank that ignores SIGTERM is killed after the grace period, torchrun
and the other rank with it, and no worker outlives the attempt."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from runctl.agent.status import read_status
from runctl.store import layout
from runctl.store.local import LocalStore
from runctl.store.snapshots import Snapshots
from waiting import wait_for

pytest.importorskip("torch")

# A worker that needs no torch itself (torchrun does): it reports its environment, waits for
# SIGTERM, then saves its part of the checkpoint, or (rank 1 of "ignore") goes on forever.
RANKS = r'''
import json, os, signal, sys, time
from pathlib import Path
import runctl

comm, mode, stop = Path(sys.argv[1]), sys.argv[2], signal.Signals[sys.argv[3]]
rank = os.environ["RANK"]
term = []


def on_term(signum, frame):
    term.append(time.time())
    flag = os.environ["RUNCTL_INTERRUPT_FILE"]
    runctl.save_atomic(comm / f"sigterm-{rank}.json", json.dumps({"time": term[0], "flag": os.path.exists(flag)}))


signal.signal(stop, on_term)
env = {k: v for k, v in os.environ.items() if k.startswith(("RUNCTL_", "TRAINCTL_"))}
runctl.save_atomic(comm / f"ready-{rank}.json", json.dumps(
    {"pid": os.getpid(), "env": env, "world_size": os.environ["WORLD_SIZE"]}))
while not term:
    time.sleep(0.01)
if mode == "ignore" and rank == "1":
    while True:
        time.sleep(0.1)
runctl.save_atomic(runctl.checkpoint_dir() / f"part-{rank}.bin", rank * 100)
sys.exit(128 + stop)
'''


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def start(tmp_path: Path, cli_env: dict, mode: str, *options, stop: str = "SIGTERM") -> tuple[subprocess.Popen, Path]:
    comm = tmp_path / "comm"
    comm.mkdir()
    (tmp_path / "ranks.py").write_text(RANKS)
    proc = subprocess.Popen([sys.executable, "-m", "runctl", "run", "ranks.py", "--nproc-per-node", "2",
                             "--job-id", "ranks", "--stop-signal", stop, *options, "--", str(comm), mode, stop],
                            cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, comm


def ready(proc: subprocess.Popen, comm: Path) -> list[dict]:
    """Both ranks' reports, once both started (torchrun imports torch first: seconds)."""
    paths = [comm / f"ready-{rank}.json" for rank in (0, 1)]
    wait_for("both ranks", lambda: all(p.exists() for p in paths), proc, timeout=90)
    return [json.loads(p.read_text()) for p in paths]


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def test_every_rank_gets_the_environment_and_the_stop_signal(tmp_path, cli_env):
    temp = tmp_path / "tmp"  # where torchrun would leave a log folder per run
    temp.mkdir()
    proc, comm = start(tmp_path, {**cli_env, "TMPDIR": str(temp)}, "save", "--grace", "60")
    reports = ready(proc, comm)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)  # the agent's own stop: signal, grace, final snapshot
    code, err = finish(proc)
    assert code == 130, err  # stopped
    assert "Traceback" not in err

    envs = [r["env"] for r in reports]
    assert [r["world_size"] for r in reports] == ["2", "2"]
    assert envs[0] == envs[1]  # one job, one attempt: the same variables on every rank
    assert envs[0]["RUNCTL_JOB_ID"] == "ranks" and envs[0]["RUNCTL_ATTEMPT"] == "0"
    folder = tmp_path / ".runctl" / "jobs" / "ranks" / "checkpoints"
    assert envs[0]["RUNCTL_CHECKPOINT_DIR"] == envs[0]["TRAINCTL_CHECKPOINT_DIR"] == str(folder)
    assert {"RUNCTL_INTERRUPT_FILE", "RUNCTL_PROGRESS_FILE"} <= set(envs[0])

    for rank in (0, 1):
        got = json.loads((comm / f"sigterm-{rank}.json").read_text())
        assert got["flag"], f"rank {rank}: RUNCTL_INTERRUPT_FILE did not exist when SIGTERM arrived"
        assert got["time"] - sent < 5, got

    store = LocalStore(tmp_path / ".runctl" / "store")
    (attempt,) = read_status(store, "ranks").attempts
    assert attempt.exit_code == 143  # torchrun's launcher, as a single process would end
    assert attempt.final_snapshot is not None
    latest = Snapshots(store, layout.checkpoints_prefix("ranks")).latest()
    assert sorted(f.path for f in latest.files) == ["part-0.bin", "part-1.bin"]  # every rank's part
    for report in reports:
        assert gone(report["pid"])
    assert not list(temp.glob("torchelastic_*"))


def test_a_rank_ignoring_sigterm_is_killed_after_the_grace_with_the_whole_tree(tmp_path, cli_env):
    proc, comm = start(tmp_path, cli_env, "ignore", "--grace", "2")
    reports = ready(proc, comm)
    launcher = [p for p in psutil.Process(proc.pid).children(recursive=True)
                if "torch.distributed.run" in " ".join(p.cmdline()) or "TORCH_ELASTIC" in " ".join(p.cmdline())]
    assert launcher, "torchrun is not in the agent's tree"
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 130, err
    assert "grace period over: killing the process tree" in err

    for rank in (0, 1):
        assert (comm / f"sigterm-{rank}.json").exists(), f"rank {rank} did not get SIGTERM"
    (attempt,) = read_status(LocalStore(tmp_path / ".runctl" / "store"), "ranks").attempts
    assert attempt.exit_code == -signal.SIGKILL
    waited = attempt.ended - attempt.interruption["received"]
    assert 2.0 <= waited < 10.0, waited  # runctl's grace, not torchrun's shutdown timeout
    for pid in [p.pid for p in launcher] + [r["pid"] for r in reports]:
        assert gone(pid), f"process {pid} outlived the attempt"


def test_another_stop_signal_is_forwarded_by_torchrun_too(tmp_path, cli_env):
    """SIGUSR1 would kill a plain torchrun (it handles SIGTERM, SIGINT, SIGHUP, SIGQUIT) and
    orphan its workers; runctl's launcher adds the job's stop signal to those it forwards."""
    proc, comm = start(tmp_path, cli_env, "save", "--grace", "60", stop="SIGUSR1")
    ready(proc, comm)
    proc.send_signal(signal.SIGTERM)  # the agent's own stop: the job's stop signal to the tree
    code, err = finish(proc)
    assert code == 130, err
    assert "Traceback" not in err
    for rank in (0, 1):
        assert (comm / f"sigterm-{rank}.json").exists(), f"rank {rank} did not get SIGUSR1"
    (attempt,) = read_status(LocalStore(tmp_path / ".runctl" / "store"), "ranks").attempts
    assert attempt.exit_code == 128 + signal.SIGUSR1  # torchrun ended by the signal it forwarded
