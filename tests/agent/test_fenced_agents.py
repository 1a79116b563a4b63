"""Two agent processes, one job (issue 12, fencing). The agents are real processes running
the real Agent on one store (tests/agent/fenced_agent.py), their scripts real processes too;
the store of agent A fails the way a network does once A's first snapshot is durable.

Whatever happens, the store's snapshots come from one generation sequence (generations never
go down as seqs go up), and a script never runs while another agent holds the lease."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from runctl.store import layout
from runctl.store.local import LocalStore
from runctl.store.fencing import generation_of
from runctl.store.manifest import manifest_key, parse_seq_name
from runctl.store.snapshots import Snapshots
from waiting import wait_for

HELPER = Path(__file__).with_name("fenced_agent.py")
TTL = 6.0

JOB_SCRIPT = """\
import json, os, signal, sys, time
import runctl

events, steps = sys.argv[1], int(sys.argv[2])
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))

def note(what, step):
    with open(events, "a") as f:
        f.write(json.dumps({"who": os.environ["AGENT_NAME"], "what": what, "step": step, "t": time.time()}) + "\\n")

resume = runctl.resume_from()
step = int(resume.read_text()) if resume else 0
note("start", step)
folder = runctl.checkpoint_dir()
while step < steps and not stop:
    time.sleep(0.03)
    step += 1
    if step % 10 == 0:
        runctl.save_atomic(folder / f"step-{step:06d}", str(step))
        for old in sorted(folder.glob("step-*"))[:-2]:
            old.unlink()
note("stopped" if stop else "done", step)
"""


@pytest.fixture
def work(tmp_path):
    (tmp_path / "job.py").write_text(JOB_SCRIPT)
    return tmp_path


@pytest.fixture
def agents(work, cli_env):
    """``agents(store_url, name, *args)`` starts an agent process; killed at the end."""
    procs: dict[str, subprocess.Popen] = {}

    def start(store_url: str, name: str, *args: str) -> subprocess.Popen:
        procs[name] = subprocess.Popen([sys.executable, str(HELPER), str(work), name, store_url,
                                        "--ttl", str(TTL), *args], cwd=work, env=cli_env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return procs[name]

    yield start
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.communicate()


def outcome(proc: subprocess.Popen, timeout: float = 90.0) -> dict:
    out, err = proc.communicate(timeout=timeout)
    lines = out.strip().splitlines()
    assert lines, f"no result from the agent (exit {proc.returncode}): {err[-3000:]}"
    return {**json.loads(lines[-1]), "exit": proc.returncode, "stderr": err}


def script_events(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "script.jsonl").read_text().splitlines()]


def generations_by_seq(store) -> list[int]:
    """The lease generation of every complete snapshot in the store, stale ones included."""
    prefix = layout.checkpoints_prefix("fenced")
    found = []
    for seq in sorted(s for s in map(parse_seq_name, store.list_dirs(prefix)) if s is not None):
        if store.exists(manifest_key(prefix, seq)):
            found.append(json.loads(store.read(manifest_key(prefix, seq)).data)["metadata"].get("lease_generation", 0))
    return found


def a_then_b(store, agents, *a_args: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Agent A, running the job once it holds the lease; then agent B, waiting for it."""
    a = agents(store.url, "a", *a_args)
    wait_for("A to take the lease", lambda: store.exists(layout.status_key("fenced")))
    return a, agents(store.url, "b", "--wait")


def test_a_renewal_whose_response_was_lost_does_not_let_a_second_agent_in(work, agents, local_store):
    """Issue 12 as reported: A's renewal landed, its answer was lost, the retry got 412. A
    reads the lease back, keeps it and finishes the job; B, waiting, never runs it."""
    a, b = a_then_b(local_store, agents, "--fault", "lost-response")
    ra, rb = outcome(a), outcome(b)
    assert ra["struck"] is not None and ra["lease_failures"] == 1, ra
    assert ra["outcome"] == "completed", ra["stderr"][-3000:]
    assert rb["outcome"] == "completed while waiting", rb
    assert {e["who"] for e in script_events(work)} == {"a"}
    assert set(generations_by_seq(local_store)) == {1}


def test_an_agent_that_cannot_renew_stops_its_script_before_another_takes_over(work, agents, local_store):
    a, b = a_then_b(local_store, agents, "--fault", "partition")
    ra, rb = outcome(a), outcome(b)
    assert ra["exit"] == 3 and ra["outcome"] == "LeaseLost", ra
    assert "could not renew its lease" in ra["message"] and "took no snapshot after that" in ra["message"]
    assert rb["outcome"] == "completed" and rb["generation"] == 2, rb["stderr"][-3000:]
    events = script_events(work)
    a_stopped = [e["t"] for e in events if e["who"] == "a" and e["what"] == "stopped"]
    assert a_stopped, events
    # A's script stopped before the lease A last proved could run out, so before B got it.
    assert a_stopped[0] < ra["struck"] + TTL and a_stopped[0] < rb["acquired"]
    assert [e["who"] for e in events] == ["a", "a", "b", "b"]  # start, stopped: one after the other
    assert sum(1 for _, kind, _ in ra["events"] if kind == "snapshot") == 1  # none after the fault
    generations = generations_by_seq(local_store)
    assert generations == sorted(generations) and generations[0] == 1 and generations[-1] == 2, generations
    latest = Snapshots(local_store, layout.checkpoints_prefix("fenced")).latest()
    assert generation_of(latest) == 2 and latest.metadata["newest"] == "step-000300"


def test_an_agent_paused_past_its_lease_is_fenced_when_it_wakes(s3_store, work, agents):
    """A hangs (SIGSTOP: a long GC pause, a frozen VM) past its lease; B takes the job over
    and commits. When A wakes, its commits are refused and it stops its script. On S3: a
    process stopped inside a local store's conditional write would hold its lock file."""
    store = s3_store
    snaps = Snapshots(store, layout.checkpoints_prefix("fenced"))
    a = agents(store.url, "a")
    wait_for("A's first snapshot", snaps.latest)
    os.kill(a.pid, signal.SIGSTOP)
    paused = time.time()
    b = agents(store.url, "b", "--wait")
    wait_for("B's first snapshot", lambda: (info := snaps.latest()) is not None and generation_of(info) == 2,
             timeout=TTL + 60)
    os.kill(a.pid, signal.SIGCONT)
    ra, rb = outcome(a), outcome(b)
    assert ra["exit"] == 3 and ra["outcome"] == "LeaseLost", ra
    # Awake, it finds its lease run out, or taken: either way it stops.
    assert "lease ran out" in ra["message"] or "lost its lease" in ra["message"], ra["message"]
    # Its script stopped on SIGTERM, or was killed at once (the lease had run out already),
    # or had finished during the pause; it writes nothing once A has exited.
    a_events = [e for e in script_events(work) if e["who"] == "a"]
    assert [e["what"] for e in a_events] in (["start"], ["start", "stopped"], ["start", "done"]), a_events
    a_exited = time.time()
    time.sleep(0.5)
    assert max(p.stat().st_mtime for p in (work / "a" / "ckpt").iterdir()) < a_exited
    assert rb["outcome"] == "completed" and rb["acquired"] >= paused + 1.0, rb
    generations = generations_by_seq(store)
    assert generations == sorted(generations) and generations[0] == 1 and generations[-1] == 2, generations
    assert generation_of(snaps.latest()) == 2 and snaps.latest().metadata["newest"] == "step-000300"
    # A commit whose fence A passed just before the pause may publish when A wakes: its seq was
    # taken before B's, so it sits below B's snapshots. Nothing of A's comes after B's.
    late = [int(m.split()[1]) for t, kind, m in ra["events"] if kind == "snapshot" and t >= rb["acquired"]]
    first_of_b = min(i.seq for i in snaps.list() if generation_of(i) == 2)
    assert len(late) <= 1 and all(seq < first_of_b for seq in late), (late, first_of_b)


def test_runctl_run_stops_when_another_agent_takes_its_lease(tmp_path, cli_env, train_here):
    """Through the real CLI: another agent takes the lease over (here: the test writes it, as
    a takeover after an expiry would). runctl kills the script, leaves the new holder's lease
    alone and ends with one error line and exit code 3."""
    proc = subprocess.Popen([sys.executable, "-m", "runctl", "run", train_here, "--job-id", "stolen", "--",
                             "--steps", "1000000", "--checkpoint-every", "500"], cwd=tmp_path, env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        store = LocalStore(tmp_path / ".runctl" / "store")
        snaps = Snapshots(store, layout.checkpoints_prefix("stolen"))
        wait_for("the first snapshot", snaps.latest)
        taken = {"holder": "elsewhere:1:0000", "host": "elsewhere", "pid": 1, "expires": time.time() + 600,
                 "released": False, "generation": 2, "token": "taken-over"}
        store.write(layout.lease_key("stolen"), json.dumps(taken).encode())
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("runctl: error: job stolen: this agent lost its lease; it is held by elsewhere:1:0000")
    assert "stopped the script of attempt 0 and took no snapshot after that" in last
    # Killed at once: the new holder may run its own script already.
    assert "sent SIGTERM to the script, grace 0s" in err and "killing the process tree" in err
    assert json.loads(store.read(layout.lease_key("stolen")).data) == taken
    assert all(generation_of(info) == 1 for info in snaps.list())


def test_an_agent_whose_lease_was_taken_while_it_restored_starts_no_script(work, agents, local_store):
    done = outcome(agents(local_store.url, "a", "--steps", "20"))
    assert done["outcome"] == "completed", done["stderr"][-3000:]
    rb = outcome(agents(local_store.url, "b", "--fault", "taken-at-restore"))
    assert rb["exit"] == 3 and rb["outcome"] == "LeaseLost", rb
    assert "held by elsewhere:1:0000" in rb["message"] and "did not start attempt 1" in rb["message"]
    assert {e["who"] for e in script_events(work)} == {"a"}


def test_a_detached_agent_that_loses_its_lease_logs_one_line(tmp_path, runctl_cli, train_here):
    done = runctl_cli("run", "--detach", "--output", "json", train_here, "--job-id", "stolen", "--",
                      "--steps", "1000000", "--checkpoint-every", "500")
    assert done.returncode == 0, done.stderr
    pid = json.loads(done.stdout)["agent_pid"]
    try:
        store = LocalStore(tmp_path / ".runctl" / "store")
        wait_for("the first snapshot", Snapshots(store, layout.checkpoints_prefix("stolen")).latest)
        taken = {"holder": "elsewhere:1:0000", "host": "elsewhere", "pid": 1, "expires": time.time() + 600,
                 "released": False, "generation": 2, "token": "taken-over"}
        store.write(layout.lease_key("stolen"), json.dumps(taken).encode())
        wait_for("the agent to exit", lambda: not psutil.pid_exists(pid) or
                 psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    finally:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)
    (log,) = tmp_path.rglob("agent.log")
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "ERROR runctl.agent: job stolen: this agent lost its lease; it is held by elsewhere:1:0000" in text


def test_a_lease_file_deleted_by_hand_does_not_fence_out_every_later_agent(work, agents, local_store):
    """lease.json removed (by hand, or by a cleanup) after snapshots of generation 6: the next
    agent starts the lease at generation 1 and must not stay below its own snapshots."""
    released = {"holder": "old:1:0000", "host": "old", "pid": 1, "expires": 0.0, "released": True,
                "generation": 5, "token": "old"}
    local_store.write(layout.lease_key("fenced"), json.dumps(released).encode())
    assert outcome(agents(local_store.url, "a", "--steps", "20"))["outcome"] == "completed"
    snaps = Snapshots(local_store, layout.checkpoints_prefix("fenced"))
    assert generation_of(snaps.latest()) == 6
    local_store.delete([layout.lease_key("fenced")])
    rb = outcome(agents(local_store.url, "b", "--steps", "40"))
    assert rb["outcome"] == "completed", rb["stderr"][-3000:]
    latest = snaps.latest()
    assert generation_of(latest) == 7 and latest.metadata["newest"] == "step-000040"
    assert json.loads(local_store.read(layout.lease_key("fenced")).data)["generation"] == 7
