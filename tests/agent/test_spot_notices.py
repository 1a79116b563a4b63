"""Spot notices end to end: ``runctl run --spot-notices`` as a subprocess, watching the IMDS
emulator (runctl.testing.imds) over real HTTP.

- a spot instance-action reaches the script as SIGTERM within 2 s of becoming visible, with
  RUNCTL_INTERRUPT_FILE already written; status.json and ``runctl status`` tell the story;
  the job ends "interrupted" with exit code 1;
- the notice still arrives after the IMDSv2 token expired mid-run, after the service was
  down for a while (status says it is unreachable meanwhile), after malformed answers;
- a rebalance recommendation snapshots at once and does not signal the script;
- compressed time: a 10 s deadline with ~50 MB checkpoints, the script saving on SIGTERM or
  ignoring it: the final snapshot is complete in the store before the deadline (local, S3);
- a store that fails to write status.json just when a notice arrives costs neither the
  script's SIGTERM nor the job (the agent in a child process, a fake source, a flaky store).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runctl.interruptions.ec2 import parse_imds_time
from runctl.store import layout, open_store
from runctl.store.snapshots import Snapshots
from runctl.testing.imds import ImdsEmulator
from waiting import wait_for

SCRIPT = r'''
import hashlib, json, os, signal, sys, time
from pathlib import Path
import runctl

comm = Path(os.environ["SPOT_TEST_COMM"])
mode = sys.argv[1]
folder = runctl.checkpoint_dir()
MB = 1 << 20
term = []


def mark(name, data=""):
    runctl.save_atomic(comm / name, data)


def on_term(signum, frame):
    now = time.time()
    flag = os.environ["RUNCTL_INTERRUPT_FILE"]
    copied = Path(flag).read_text() if os.path.exists(flag) else None
    mark("sigterm.json", json.dumps({"time": now, "flag": copied}))
    term.append(now)


def wait_for(name):
    while not (comm / name).exists():
        time.sleep(0.01)


def save(name, size):
    data = os.urandom(size)
    runctl.save_atomic(folder / name, data)
    return hashlib.sha256(data).hexdigest()


signal.signal(signal.SIGTERM, on_term)
if mode == "wait":  # until SIGTERM; then save a small checkpoint and exit 0
    mark("ready")
    while not term:
        time.sleep(0.01)
    save("last.bin", 1024)
elif mode == "rebalance":  # a checkpoint, rewritten in place on request; exit 0 on request
    save("ckpt.bin", MB)
    mark("ready")
    wait_for("rewrite")
    mark("rewritten", save("ckpt.bin", MB))
    wait_for("finish")
elif mode == "save":  # 50 MB before; on SIGTERM a new 50 MB checkpoint, then exit 0
    save("ckpt-0.bin", 50 * MB)
    mark("ready")
    while not term:
        time.sleep(0.01)
    mark("saved", save("ckpt-1.bin", 50 * MB))
elif mode == "ignore":  # 50 MB before; on SIGTERM rewrite it, then hang until SIGKILL
    save("ckpt.bin", 50 * MB)
    mark("ready")
    while not term:
        time.sleep(0.01)
    mark("saved", save("ckpt.bin", 50 * MB))
    while True:
        time.sleep(0.1)
'''


class Run:
    """``python -m runctl run ...`` in the background; every output line stamped with time.time()."""

    def __init__(self, args: list, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "runctl", "run", *map(str, args)], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: dict[str, list[tuple[float, str]]] = {"stdout": [], "stderr": []}
        self._pumps = [threading.Thread(target=self._pump, args=(getattr(self.proc, name), self.lines[name]),
                                        daemon=True) for name in self.lines]
        for pump in self._pumps:
            pump.start()

    @staticmethod
    def _pump(stream, into: list) -> None:
        for line in stream:
            into.append((time.time(), line.rstrip("\n")))

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for pump in self._pumps:
            pump.join(5)
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines["stderr"])

    def stamp(self, pattern: str) -> tuple[float, re.Match]:
        """(time read, match) of the first stderr line matching ``pattern``."""
        for when, line in self.lines["stderr"]:
            if (found := re.search(pattern, line)) is not None:
                return when, found
        raise AssertionError(f"no stderr line matches {pattern!r}:\n{self.stderr}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)

    def output(self) -> str:
        """What a failed wait shows (``wait_for(..., output=run.output)``): the stderr read so
        far; all of it once the run has ended (its pipes drained)."""
        if self.proc.poll() is not None:
            self.wait(5)
        return self.stderr


@pytest.fixture
def emulator():
    with ImdsEmulator() as imds:
        yield imds


@pytest.fixture
def job(tmp_path, cli_env, emulator):
    """``job(mode, *options, store=URL)``: start the script under ``runctl run --spot-notices``."""
    comm = tmp_path / "comm"
    comm.mkdir()
    (tmp_path / "s.py").write_text(SCRIPT)
    env = {**cli_env, "AWS_EC2_METADATA_SERVICE_ENDPOINT": emulator.endpoint, "SPOT_TEST_COMM": str(comm)}
    runs: list[Run] = []

    def start(mode: str, *options, store: str | None = None, job_id: str = "spot", extra_env=None) -> Run:
        url = store or str(tmp_path / "store")
        run_env = {**env, **(extra_env or {})}
        run = Run(["s.py", "--spot-notices", "--job-id", job_id, "--store", url, *options, "--", mode],
                  tmp_path, run_env)
        run.comm, run.url, run.job_id, run.env = comm, url, job_id, run_env
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


def marker(run: Run, name: str, timeout: float = 20.0) -> str:
    path = run.comm / name
    wait_for(f"the script's {name!r} marker", path.exists,
             run.proc, timeout=timeout, interval=0.02, output=run.output)
    return path.read_text()


def status_json(run: Run) -> dict:
    shown = subprocess.run([sys.executable, "-m", "runctl", "status", run.job_id, "--store", run.url,
                            "--output", "json"], cwd=run.comm.parent, env=run.env, capture_output=True, text=True,
                           timeout=30)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def served_deadline(emulator: ImdsEmulator) -> float:
    """The deadline as the notice names it (truncated to the second), as an epoch."""
    return parse_imds_time(emulator.notice.time)


def assert_acted_on(run: Run, emulator: ImdsEmulator, within: float) -> dict:
    """The script got SIGTERM within ``within`` s of the notice becoming visible, the
    interrupt file already holding the notice; the job ends interrupted (exit code 1)."""
    got = json.loads(marker(run, "sigterm.json", timeout=within + 10))
    print(f"notice visible -> SIGTERM: {got['time'] - emulator.notice.visible_at:.3f}s")
    assert got["time"] - emulator.notice.visible_at < within, (got["time"] - emulator.notice.visible_at, run.stderr)
    assert got["flag"] is not None, "RUNCTL_INTERRUPT_FILE did not exist when SIGTERM arrived"
    flag = json.loads(got["flag"])
    assert (flag["source"], flag["action"], flag["deadline"]) == ("spot", "terminate", served_deadline(emulator))
    assert run.wait(30) == 1, run.stderr
    return got


# -- the notice --------------------------------------------------------------------------------

def test_a_spot_notice_reaches_the_script_within_two_seconds(job, emulator):
    run = job("wait")
    marker(run, "ready")
    notice = emulator.schedule_notice(0.3, deadline_in=120)
    got = assert_acted_on(run, emulator, within=2.0)
    assert emulator.notice_first_served is not None and emulator.notice_first_served >= notice.visible_at
    assert got["time"] >= emulator.notice_first_served

    deadline = served_deadline(emulator)
    status = status_json(run)
    assert status["state"] == "interrupted"
    assert status["notice"]["source"] == "spot" and status["notice"]["action"] == "terminate"
    assert status["notice"]["deadline"] == deadline
    (attempt,) = status["attempts"]
    assert attempt["reason"] == "interrupted" and attempt["exit_code"] == 0
    assert attempt["interruption"]["deadline"] == deadline
    assert attempt["final_snapshot"] is not None
    shown = subprocess.run([sys.executable, "-m", "runctl", "status", run.job_id, "--store", run.url],
                           cwd=run.comm.parent, env=run.env, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert f"job {run.job_id}: interrupted" in shown.stdout
    assert "last notice: spot terminate" in shown.stdout
    assert f"deadline {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(deadline))}" in shown.stdout
    assert "Traceback" not in run.stderr


def test_the_notice_arrives_after_the_token_expired(tmp_path, cli_env):
    skew = [0.0]
    with ImdsEmulator(clock=lambda: time.time() + skew[0]) as imds:
        run = _start_with(imds, tmp_path, cli_env)
        try:
            marker(run, "ready")
            wait_for("a first poll", lambda: imds.count("spot/instance-action", "GET", 404) >= 1,
                     run.proc, timeout=10, interval=0.02, output=run.output)
            # Six hours and a second later (emulator clock): the agent's token has expired by its TTL.
            skew[0] = 21601.0
            wait_for("a 401, then a new token", lambda: imds.count("spot/instance-action", status=401) >= 1
                     and imds.count("/latest/api/token", "PUT", 200) >= 2,
                     run.proc, timeout=10, interval=0.02, output=run.output)
            skew[0] = 0.0
            # And the emulator forgetting every token (as after an IMDS restart).
            imds.expire_tokens()
            wait_for("another 401, then another token",
                     lambda: imds.count(status=401) >= 2 and imds.count("/latest/api/token", "PUT", 200) >= 3,
                     run.proc, timeout=10, interval=0.02, output=run.output)
            imds.schedule_notice(0.0, deadline_in=120)
            assert_acted_on(run, imds, within=2.0)
        finally:
            run.kill()


def _start_with(imds: ImdsEmulator, tmp_path: Path, cli_env: dict) -> Run:
    comm = tmp_path / "comm"
    comm.mkdir()
    (tmp_path / "s.py").write_text(SCRIPT)
    env = {**cli_env, "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint, "SPOT_TEST_COMM": str(comm)}
    url = str(tmp_path / "store")
    run = Run(["s.py", "--spot-notices", "--job-id", "spot", "--store", url, "--", "wait"], tmp_path, env)
    run.comm, run.url, run.job_id, run.env = comm, url, "spot", env
    return run


def test_an_outage_is_reported_and_the_notice_after_it_acted_on(job, emulator):
    run = job("wait")
    marker(run, "ready")
    wait_for("a first poll", lambda: emulator.count("spot/instance-action", "GET", 404) >= 1,
             run.proc, timeout=10, interval=0.02, output=run.output)
    emulator.refuse()
    down_since = time.monotonic()

    def reported() -> str | None:
        message = status_json(run)["message"]
        return message if "metadata service unreachable" in message else None

    # The agent's heartbeat (every 5 s) carries the source's health into status.json.
    message = wait_for("status.json to say the metadata service is unreachable", reported,
                       run.proc, timeout=9, interval=0.3, output=run.output)
    assert "connection refused" in message
    assert time.monotonic() - down_since < 9
    emulator.accept()
    accepted = time.monotonic()
    emulator.schedule_notice(0.0, deadline_in=120)
    # The source backs off while the service is down (at most 5 s between tries).
    got = json.loads(marker(run, "sigterm.json", timeout=15))
    print(f"after the outage: notice visible -> SIGTERM {got['time'] - emulator.notice.visible_at:.3f}s")
    assert got["time"] - emulator.notice.visible_at < 6.5, run.stderr
    assert time.monotonic() - accepted < 15
    assert run.wait(30) == 1, run.stderr
    assert status_json(run)["state"] == "interrupted"


def test_malformed_answers_then_a_valid_notice(job, emulator):
    run = job("wait")
    emulator.malformed_next(3)
    marker(run, "ready")
    wait_for("the malformed answers to be served", lambda: emulator.count("spot/instance-action", "GET", 200) >= 3,
             run.proc, timeout=15, interval=0.02, output=run.output)
    assert not (run.comm / "sigterm.json").exists()  # a broken answer is not a notice
    emulator.schedule_notice(0.0, deadline_in=120)
    assert_acted_on(run, emulator, within=2.0)
    status = status_json(run)
    assert status["notice"]["deadline"] == served_deadline(emulator)
    assert status["attempts"][0]["reason"] == "interrupted"


# -- the rebalance recommendation -----------------------------------------------------------------

def test_a_rebalance_recommendation_snapshots_at_once_and_signals_nothing(job, emulator, tmp_path):
    run = job("rebalance", "--sync-interval", 600)
    snaps = Snapshots(open_store(run.url), layout.checkpoints_prefix(run.job_id))
    marker(run, "ready")
    first = wait_for("the first snapshot (a new file)", snaps.latest,
                     run.proc, timeout=10, interval=0.02, output=run.output)
    (run.comm / "rewrite").write_text("")
    rewritten = marker(run, "rewritten")
    time.sleep(1.5)  # settled by now, but a rewrite in place waits for --sync-interval 600
    assert snaps.latest().seq == first.seq
    sent = emulator.send_rebalance()
    second = wait_for("a snapshot after the rebalance recommendation",
                      lambda: (s := snaps.latest()) is not None and s.seq > first.seq and s,
                      run.proc, timeout=5, interval=0.02, output=run.output)
    assert time.time() - sent.visible_at < 3.0
    assert {f.path: f.sha256 for f in second.files} == {"ckpt.bin": rewritten}

    status = status_json(run)
    assert status["state"] == "running"
    assert status["notice"]["source"] == "rebalance" and status["notice"]["deadline"] is None
    (run.comm / "finish").write_text("")
    assert run.wait(30) == 0, run.stderr
    assert not (run.comm / "sigterm.json").exists()
    status = status_json(run)
    assert status["state"] == "completed"
    assert status["notice"]["source"] == "rebalance"
    (attempt,) = status["attempts"]
    assert (attempt["reason"], attempt["exit_code"], attempt["interruption"]) == ("completed", 0, None)
    assert "rebalance recommendation" in run.stderr


# -- compressed time: a 10 s deadline, ~50 MB checkpoints ------------------------------------------

@pytest.mark.parametrize("mode,where", [("save", "local"), ("ignore", "local"), ("ignore", "s3")])
def test_the_final_snapshot_is_durable_before_the_deadline(request, job, emulator, tmp_path, mode, where):
    url, aws = str(tmp_path / "store"), {}
    if where == "s3":
        url = f"s3://{request.getfixturevalue('s3_bucket')}/runs"
        # cli_env was taken before the moto fixtures set these: hand them over explicitly.
        aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_") and "METADATA" not in k}
        assert aws.get("AWS_ENDPOINT_URL")
    run = job(mode, store=url, extra_env=aws)
    snaps = Snapshots(open_store(url), layout.checkpoints_prefix(run.job_id))
    marker(run, "ready")
    wait_for("the snapshot of the first 50 MB", snaps.latest, run.proc, timeout=20, interval=0.02, output=run.output)
    emulator.schedule_notice(0.0, deadline_in=10)
    deadline = served_deadline(emulator)  # up to 1 s earlier than the exact one: the stricter
    saved = marker(run, "saved", timeout=12)
    assert run.wait(30) == 1, run.stderr

    status = status_json(run)
    (attempt,) = status["attempts"]
    assert attempt["reason"] == "interrupted"
    final = snaps.get(attempt["final_snapshot"])
    assert snaps.verify(final.seq) == []
    assert saved in {f.sha256 for f in final.files}, "the final snapshot lacks the checkpoint saved on SIGTERM"
    assert final.total_bytes >= (100 if mode == "save" else 50) << 20
    durable_at, _ = run.stamp(rf"snapshot {final.seq} durable")
    print(f"{mode}/{where}: final snapshot {final.seq} durable {deadline - durable_at:.2f}s before the deadline")
    assert durable_at < deadline, (durable_at - deadline, run.stderr)
    if where == "local":
        manifest = Path(url) / layout.checkpoints_prefix(run.job_id) / f"{final.seq:08d}" / "MANIFEST.json"
        assert manifest.stat().st_mtime < deadline
    if mode == "ignore":
        killed_at, _ = run.stamp(r"grace period over: killing")
        print(f"{mode}/{where}: SIGKILL {deadline - killed_at:.2f}s before the deadline")
        assert killed_at < deadline - 2.0, run.stderr  # the 2 s safety margin, at least
        assert attempt["exit_code"] < 0  # SIGKILLed
    else:
        assert attempt["exit_code"] == 0
        assert "killing" not in run.stderr


# -- a store error at the moment of the notice ------------------------------------------------------

FLAKY_AGENT = r"""
import json, sys, threading, time
from pathlib import Path
from runctl.agent.supervisor import Agent, AgentOptions
from runctl.errors import StoreError
from runctl.models import InterruptionNotice, JobSpec
from runctl.store.local import LocalStore
from runctl.testing import FaultyStore

work, kind = Path(sys.argv[1]), sys.argv[2]
# A folder store, not a MemoryStore: the test reads it from its own process afterwards.
store = FaultyStore(LocalStore(work / "store"))


class OneNotice:
    started = sent = None

    def attempt_started(self, attempt, now):
        self.started = now

    def poll(self, now):
        if self.started is None or self.sent or now - self.started < 1.0:
            return None
        self.sent = now
        # Every try of the first status.json write after the notice fails (StatusBook
        # retries a write three times).
        store.inject("write", key="status.json", when="before", times=3, error=StoreError("injected: 503 SlowDown"))
        if kind == "spot":
            return InterruptionNotice("spot", "terminate", now, now + 120, "spot instance-action terminate")
        return InterruptionNotice("rebalance", "rebalance", now, None, "rebalance recommendation")

    def close(self):
        pass


script = work / "s.py"
script.write_text(
    "import os, signal, sys, time\n"
    "import runctl\n"
    "signal.signal(signal.SIGTERM, lambda *a: (runctl.save_atomic(runctl.checkpoint_dir() / 'saved', 'x'), sys.exit(0)))\n"
    "end = time.time() + 4\n"
    "while time.time() < end:\n"
    "    time.sleep(0.02)\n")
spec = JobSpec("flaky", (sys.executable, str(script)), str(work / "store"), str(work / "ckpt"), str(work))
events = []
agent = Agent(spec, store, [OneNotice()], AgentOptions(run_dir=work / "run"),
              events=lambda e: events.append(e.kind + ": " + e.message))
status = agent.run()
print(json.dumps({"state": status.state, "events": events}))
"""


@pytest.mark.parametrize("kind", ["spot", "rebalance"])
def test_a_store_error_when_the_notice_arrives_costs_neither_the_signal_nor_the_job(tmp_path, cli_env, kind):
    done = subprocess.run([sys.executable, "-c", FLAKY_AGENT, str(tmp_path), kind], env=cli_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert any("could not record the notice" in e for e in result["events"]), result
    store = open_store(str(tmp_path / "store"))
    snaps = Snapshots(store, layout.checkpoints_prefix("flaky"))
    status = json.loads(store.read(layout.status_key("flaky")).data)
    assert status["notice"]["source"] == kind  # saved with a later update
    (attempt,) = status["attempts"]
    if kind == "spot":
        assert result["state"] == status["state"] == "interrupted"
        assert attempt["reason"] == "interrupted" and attempt["exit_code"] == 0  # it saved on SIGTERM
        assert "saved" in {f.path for f in snaps.get(attempt["final_snapshot"]).files}
    else:
        assert result["state"] == status["state"] == "completed"  # ran its 4 s, not signalled
        assert (attempt["reason"], attempt["exit_code"]) == ("completed", 0)
        assert not (tmp_path / "ckpt" / "saved").exists()
