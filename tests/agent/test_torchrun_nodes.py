"""Two machines' torchrun, for real, on loopback: two launchers from
``multinode_torchrun_argv`` (one process each) meet at the c10d rendezvous the one told
``is_host`` serves, whichever starts first, and their workers form one gloo group of two.
SIGTERM to either launcher ends it with 143, and the other machine's worker ends (its
collective fails) instead of hanging. A script that fails on one machine fails both
launchers (what lets their agents judge a script's failure at once: ``Node.await_stop``)."""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from runctl.agent.torchrun import multinode_torchrun_argv
from waiting import wait_for

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="torch is not installed: torchrun cannot run")

# Joins the group (a short timeout: a lost peer fails a collective instead of hanging), sums
# a one per rank, prints its rank; "loop": reports its pid then goes on summing until it fails;
# "rank1-fails": rank 1 exits 1 there instead, rank 0 loops.
WORKER = r'''
import datetime, json, os, sys, time
import torch
import torch.distributed as dist

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=5))
total = torch.ones(1)
dist.all_reduce(total)
print(json.dumps({"rank": dist.get_rank(), "world_size": dist.get_world_size(), "total": total.item()}), flush=True)
if sys.argv[1] == "rank1-fails" and dist.get_rank() == 1:
    raise SystemExit("the script failed on rank 1")
if sys.argv[1] in ("loop", "rank1-fails"):
    with open(os.path.join(sys.argv[2], f"ready-{dist.get_rank()}.json"), "w") as out:
        out.write(json.dumps({"pid": os.getpid()}))
    while True:
        dist.all_reduce(torch.ones(1))
        time.sleep(0.05)
dist.destroy_process_group()
'''


#: How long two launchers may take to start torch and meet: bounds a wait, not a figure (on a
#: loaded 2-core machine two torch start-ups took over a minute).
START_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Machine:
    """One machine's torchrun launcher, its output in files (a full pipe would block it)."""

    def __init__(self, tmp_path: Path, name: str, port: int, is_host: bool, *args: str) -> None:
        script = tmp_path / "worker.py"
        script.write_text(WORKER)
        argv = multinode_torchrun_argv([sys.executable, str(script), *args], 1, nnodes=2,
                                       endpoint=f"127.0.0.1:{port}", job_id="job-1", epoch=1, is_host=is_host,
                                       grace_period=5)
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"launcher {self.proc.pid} still runs after {timeout}s:\n{self.err.read_text()[-3000:]}")

    def reports(self) -> list[dict]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.startswith("{")]

    def kill_tree(self) -> None:
        try:
            tree = [self.proc, *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in tree:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=10)


@pytest.fixture
def machines():
    started: list[Machine] = []
    yield started
    for machine in started:
        machine.kill_tree()


def start_both(tmp_path: Path, machines: list, *args: str) -> tuple[Machine, Machine, int]:
    """The other machine first: its launcher waits for the host's, as on a real job."""
    port = free_port()
    other = Machine(tmp_path, "other", port, False, *args)
    machines.append(other)
    time.sleep(0.5)
    host = Machine(tmp_path, "host", port, True, *args)
    machines.append(host)
    return host, other, port


def listens(proc: subprocess.Popen, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
               for c in psutil.Process(proc.pid).net_connections(kind="tcp"))


def test_two_machines_form_one_group_of_two(tmp_path, machines):
    host, other, _ = start_both(tmp_path, machines, "once")
    assert host.wait(START_S) == 0, host.err.read_text()[-3000:]
    assert other.wait(30) == 0, other.err.read_text()[-3000:]
    reports = host.reports() + other.reports()
    assert sorted(r["rank"] for r in reports) == [0, 1]  # c10d gave each machine its rank
    assert {(r["world_size"], r["total"]) for r in reports} == {(2, 2.0)}  # one group, both summed


@pytest.mark.parametrize("stopped", ["host", "other"])
def test_sigterm_ends_one_machine_with_143_and_the_other_does_not_hang(tmp_path, machines, stopped):
    comm = tmp_path / "comm"
    comm.mkdir()
    host, other, port = start_both(tmp_path, machines, "loop", str(comm))
    ready = [comm / "ready-0.json", comm / "ready-1.json"]
    wait_for("both workers", lambda: all(path.exists() for path in ready), host.proc, timeout=START_S)
    pids = [json.loads(path.read_text())["pid"] for path in ready]
    # The machine told is_host serves the rendezvous (and the workers') TCP store, the other not,
    # although the other started first and both share the address.
    assert listens(host.proc, port) and not listens(other.proc, port)

    target, survivor = (host, other) if stopped == "host" else (other, host)
    target.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert target.wait(30) == 143, target.err.read_text()[-3000:]
    assert survivor.wait(30) != 0  # its collective failed: the machine's torchrun gave up, no restart
    assert time.monotonic() - sent < 30
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid


def test_a_script_failing_on_one_machine_fails_both_machines_torchrun(tmp_path, machines):
    comm = tmp_path / "comm"
    comm.mkdir()
    host, other, _ = start_both(tmp_path, machines, "rank1-fails", str(comm))
    codes = {host.wait(START_S), other.wait(30)}
    assert 0 not in codes, (host.err.read_text()[-3000:], other.err.read_text()[-3000:])
    assert "the script failed on rank 1" in host.err.read_text() + other.err.read_text()
