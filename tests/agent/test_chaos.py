"""Chaos: SIGKILL the agent (the runctl process) at random moments, then run the same
command again. Each rerun resumes from the latest complete snapshot in the store, taking
over the dead agent's lease at once; the job ends with the weights of a straight run."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import psutil

from runctl.agent.status import read_status
from runctl.store import layout
from runctl.store.local import LocalStore
from runctl.store.snapshots import Snapshots
from waiting import wait_for

STEPS, EVERY = 4000, 1000  # ~1.5 ms a step: a checkpoint every ~1.5 s, durable ~1.5 s later
JOB = "chaos"
SEED = 20260901


def kill_moments(rng: random.Random) -> list[tuple[bool, float]]:
    """Six moments, in a seeded order: (False, t) kills t seconds after the start (startup,
    restore, before or during a snapshot); (True, t) kills t seconds after the run made a
    new snapshot durable, so the job makes progress however slow the machine is."""
    moments = [(False, rng.uniform(0.2, 1.0)), (False, rng.uniform(0.8, 2.0)), (False, rng.uniform(1.5, 3.0)),
               (False, rng.uniform(0.2, 3.0)), (True, rng.uniform(0.0, 1.0)), (True, rng.uniform(0.0, 1.0))]
    rng.shuffle(moments)
    return moments


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sigkill_the_agent_at_random_moments(tmp_path, cli_env, train_here, straight_weights):
    command = [sys.executable, "-m", "runctl", "run", train_here, "--job-id", JOB,
               "--", "--steps", str(STEPS), "--checkpoint-every", str(EVERY)]
    store = LocalStore(tmp_path / ".runctl" / "store")
    snaps = Snapshots(store, layout.checkpoints_prefix(JOB))
    rng = random.Random(SEED)
    kills, resumed, final = 0, [], None

    def snapshot_past(seq: int | None) -> bool:
        latest = snaps.latest()
        return latest is not None and (seq is None or latest.seq > seq)

    def run(moment: tuple[bool, float] | None, n: int):
        """Start the command and SIGKILL it at ``moment`` unless it ended first.
        Returns (killed, stdout, stderr)."""
        latest = snaps.latest()
        expected = latest.seq if latest else None
        status = read_status(store, JOB)
        before = len(status.attempts) if status else 0
        out, err = tmp_path / f"run-{n}.out", tmp_path / f"run-{n}.err"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            proc = subprocess.Popen(command, cwd=tmp_path, env=cli_env, stdout=stdout, stderr=stderr)
            try:
                if moment is not None:
                    after_snapshot, delay = moment
                    if after_snapshot:
                        # A run that ends first (its job done) ends the wait as well.
                        wait_for(f"a snapshot after {expected} within 30 s of training",
                                 lambda: proc.poll() is not None or snapshot_past(expected), timeout=30, interval=0.05)
                proc.wait(timeout=None if moment is None else delay)
                killed = False
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed = True
            finally:
                if proc.poll() is None:
                    proc.kill()
        status = read_status(store, JOB)
        new = status.attempts[before:] if status else ()
        print(f"run {n}: kill at {moment}: killed={killed}, latest before={expected}, "
              f"new attempts (number, resumed_from)={[(a.number, a.resumed_from) for a in new]}")
        if new:
            # The rerun restored the latest complete snapshot there was when it started.
            assert new[0].resumed_from == expected, (n, new[0], expected)
            resumed.append(new[0].resumed_from)
        if killed:
            assert len(new) <= 1 and all(a.ended is None for a in new)
            for attempt in new:  # the training process dies with its agent
                wait_for(f"run {n}: attempt {attempt.number} (pid {attempt.pid}) to die with its agent",
                         lambda: gone(attempt.pid), timeout=5, interval=0.02)
            latest = snaps.latest()
            if latest is not None:
                assert snaps.verify(latest) == []
                assert expected is None or latest.seq >= expected
        else:
            assert proc.returncode == 0, err.read_text()
        return killed, out.read_text(), err.read_text()

    started = time.monotonic()
    for n, moment in enumerate(kill_moments(rng)):
        killed, out, _err = run(moment, n)
        if not killed:  # it finished before this kill: that was the last run
            final = out
            break
        kills += 1
    if final is None:
        killed, final, err = run(None, 99)
    print(f"{kills} kills, {time.monotonic() - started:.1f}s")

    lines = [line for line in final.splitlines() if line.startswith('{"final_step"')]
    assert len(lines) == 1, final
    result = json.loads(lines[0])
    assert result == {"final_step": STEPS, "weights_sha256": straight_weights(STEPS)}
    status = read_status(store, JOB)
    assert status.state == "completed" and status.attempts[-1].reason == "completed"
    assert kills >= 4
    assert any(seq is not None for seq in resumed), "no rerun resumed from a snapshot"
