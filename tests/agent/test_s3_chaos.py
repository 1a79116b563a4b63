"""Chaos on the network to S3: training/train.py run N times under ``runctl run`` on an S3
store behind the fault-injecting proxy (runctl.testing.s3_proxy), each run with its own seed
and frequent faults: connection resets before and after a request reaches S3, truncated
answers, stalls. Each run has one rehearsed interruption, so a snapshot is also committed
on SIGTERM, restored and resumed through the proxy.

Every run must end in one of two ways:

- exit 0, the weights of a straight run, status.json "completed", the lease released and
  the latest snapshot holding the checkpoint of the last step (success only once the final
  snapshot is durable);
- a non-zero exit with one clear line saying why: the last line on stderr, or the first
  reason under "verdict: FAIL" when the rehearsal failed (e.g. its interruption's snapshot
  did not become durable); no traceback, no "internal error", no conflict with "another"
  agent or writer (each job has one agent); status.json not left "running" and no
  training process left behind.

and in both cases ``runctl checkpoint verify --all`` (straight to moto, no proxy) passes on
the job's store. The figures (runs, faults injected by kind, outcomes) are printed (-s).

A run's faults follow from its seed, but which request meets which fault depends on the
order the agent's threads send their requests in: a seed replays a run approximately.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psutil

from runctl.agent.status import read_status
from runctl.errors import NotFoundError
from runctl.store import layout
from runctl.store.s3 import S3Store
from runctl.store.snapshots import Snapshots
from runctl.testing import FaultPlan, S3FaultProxy

RUNS = 30
CONCURRENT = 5  # runs at once: most of a run's time is spent waiting on S3 and stalls
FIRST_SEED = 20261206
RATES = (0.1, 0.15, 0.2)  # the chance that a request is faulted, by run, in turn
STALLS_S = (0.1, 1.0)
STEPS, EVERY = 800, 100  # ~1.2 s of training on an idle machine; the rehearsed interruption comes at 0.5 s
LAST_CHECKPOINT = f"ckpt-{STEPS:06d}.json"  # what train.py saves at its last step
PREFIX = "chaos"
RUN_TIMEOUT_S = 150
CORRECT, CLEAN_ERROR, BAD = "completed, correct weights", "clean error", "BAD"


@dataclass
class Run:
    number: int
    seed: int
    rate: float
    job: str
    code: int | None = None
    stdout: str = ""
    stderr: str = ""
    requests: int = 0
    seconds: float = 0.0
    faults: list = field(default_factory=list)
    outcome: str = BAD
    said: str | None = None  # the clear error line of a run that failed
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        tail = "\n      ".join(self.stderr.strip().splitlines()[-6:])
        verdict = "\n      ".join(line for line in self.stdout.splitlines() if "verdict" in line or "  - " in line)
        faults = "\n      ".join(f"#{f.number} {f.kind} {f.method} {f.target} ({f.detail})" for f in self.faults)
        return (f"run {self.number} (seed {self.seed}, rate {self.rate}, job {self.job}): exit {self.code}; "
                f"{'; '.join(self.problems)}\n    faults:\n      {faults}\n    stderr (last lines):\n      {tail}"
                f"\n    stdout (rehearsal verdict):\n      {verdict}")


def test_runs_through_a_faulty_network_end_correct_or_with_a_clean_error(
        tmp_path, moto_server, s3_bucket, cli_env, train_here, straight_weights):
    weights = straight_weights(STEPS)
    store = S3Store(s3_bucket, PREFIX, endpoint_url=moto_server)
    direct_env = {**cli_env, "AWS_ENDPOINT_URL": moto_server}
    runs = [Run(n, FIRST_SEED + n, RATES[n % len(RATES)], f"chaos-{n:02d}") for n in range(RUNS)]

    def play(run: Run) -> Run:
        here = tmp_path / run.job
        (here / "training").mkdir(parents=True)
        shutil.copy(tmp_path / train_here, here / "training")
        plan = FaultPlan(seed=run.seed, rate=run.rate, stall_s=STALLS_S)
        started = time.monotonic()
        with S3FaultProxy(moto_server, plan) as proxy:
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "runctl", "run", "training/train.py",
                     "--store", f"s3://{s3_bucket}/{PREFIX}", "--job-id", run.job, "--sync-interval", "0.5",
                     "--rehearse", "1", "--rehearse-at", "0.5s",
                     "--", "--steps", str(STEPS), "--checkpoint-every", str(EVERY)],
                    cwd=here, env={**cli_env, "AWS_ENDPOINT_URL": proxy.endpoint},
                    capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
                run.code, run.stdout, run.stderr = done.returncode, done.stdout, done.stderr
            except subprocess.TimeoutExpired as hung:  # its output is bytes, whatever text= says
                run.stdout, run.stderr = (_text(hung.stdout), _text(hung.stderr))
        run.seconds = time.monotonic() - started
        run.requests, run.faults = proxy.requests, proxy.faults
        run.problems = judge(run, store, weights)
        if run.code is None:
            run.problems.insert(0, f"runctl run did not end within {RUN_TIMEOUT_S} s (killed)")
        verify = subprocess.run([sys.executable, "-m", "runctl", "checkpoint", "verify", "--all",
                                 "--store", f"s3://{s3_bucket}/{PREFIX}", "--job", run.job],
                                cwd=here, env=direct_env, capture_output=True, text=True, timeout=60)
        if verify.returncode != 0:
            run.problems.append(f"checkpoint verify --all failed ({verify.returncode}): "
                                f"{(verify.stdout + verify.stderr).strip()[-400:]}")
        if not run.problems:
            run.outcome = CORRECT if run.code == 0 else CLEAN_ERROR
        return run

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        played = list(pool.map(play, runs))
    seconds = time.monotonic() - started

    faults = Counter(f.kind for run in played for f in run.faults)
    outcomes = Counter(run.outcome for run in played)
    figures = (f"{len(played)} runs in {seconds:.0f} s ({CONCURRENT} at a time), "
               f"{sum(r.requests for r in played)} requests, {sum(faults.values())} faults injected "
               f"({', '.join(f'{k} {n}' for k, n in sorted(faults.items()))}); outcomes: "
               + ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())))
    print(figures)
    for run in played:
        print(f"  run {run.number} seed {run.seed} rate {run.rate}: {run.seconds:.1f} s, exit {run.code}, "
              f"{run.requests} requests, {len(run.faults)} faults, "
              f"{run.outcome}: {'; '.join(run.problems) or run.said or ''}")
    bad = [run for run in played if run.outcome == BAD]
    assert not bad, figures + "\n" + "\n".join(run.describe() for run in bad)
    assert sum(faults.values()) >= 5 * RUNS, figures  # faults were frequent
    assert set(faults) == {"reset_before", "reset_after", "truncate", "stall"}, figures
    assert outcomes[CORRECT] >= RUNS // 3, figures  # runctl rides out most faults, it does not just give up


def judge(run: Run, store: S3Store, weights: str) -> list[str]:
    """What is wrong with how ``run`` ended (nothing: it ended correctly or cleanly)."""
    status = read_status(store, run.job)
    problems = [f"attempt {a.number}'s process {a.pid} outlived runctl"
                for a in (status.attempts if status else ()) if a.pid and _alive(a.pid)]
    if run.code == 0:
        finals = [line for line in run.stdout.splitlines() if line.startswith('{"final_step"')]
        if len(finals) != 1 or json.loads(finals[0]) != {"final_step": STEPS, "weights_sha256": weights}:
            problems.append(f"exit 0 without the straight run's weights: {finals}")
        if status is None or status.state != "completed":
            problems.append(f"exit 0 but status.json says {status.state if status else 'nothing'}")
        lease = _lease(store, run.job)
        if lease is not None and not lease.get("released"):
            problems.append(f"exit 0 but lease.json is still held (not released): {lease}")
        # The snapshot taken after the script exited holds the checkpoint it saved last.
        latest = Snapshots(store, layout.checkpoints_prefix(run.job)).latest()
        if latest is None or LAST_CHECKPOINT not in {f.path for f in latest.files}:
            final = status.attempts[-1].final_snapshot if status and status.attempts else None
            problems.append(f"exit 0 but the latest snapshot ({latest.seq if latest else None}, files "
                            f"{sorted(f.path for f in latest.files) if latest else None}) lacks {LAST_CHECKPOINT}; "
                            f"status.json names final snapshot {final}")
        return problems
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    if "Traceback" in run.stderr:
        problems.append("a traceback on stderr")
    if "internal error" in run.stderr:
        problems.append(f"an internal error: {_first(lines, 'internal error')}")
    if sum(line.startswith("runctl: error: ") for line in lines) > 1:
        problems.append("more than one error line")
    run.said = _why(run, lines)
    if run.said is None:
        problems.append(f"no clear error line: stderr ends with {lines[-1] if lines else ''!r}")
    elif "another" in run.said:
        problems.append(f"a conflict with another agent or writer, but the job has one agent: {run.said!r}")
    if status is not None and status.state == "running":
        problems.append("status.json left 'running' after runctl exited")
    return problems


def _why(run: Run, lines: list[str]) -> str | None:
    """The one line that says why ``run`` failed: the last line on stderr, or, when a
    rehearsal failed, the verdict's first reason (on stdout, below the rehearsal's table)."""
    last = lines[-1] if lines else ""
    if last.startswith(("runctl: error: ", f"runctl: job {run.job} failed: ")):
        return last
    out = run.stdout.splitlines()
    if run.code == 1 and "verdict: FAIL" in out:
        reasons = out[out.index("verdict: FAIL") + 1:]
        if reasons and reasons[0].startswith("  - "):
            return reasons[0].strip()
    return None


def _lease(store: S3Store, job: str) -> dict | None:
    try:
        return json.loads(store.read(layout.lease_key(job)).data)
    except NotFoundError:
        return None


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _first(lines: list[str], text: str) -> str:
    return next((line for line in lines if text in line), "")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
