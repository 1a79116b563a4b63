"""training/examples/train_torch.py under ``runctl run --rehearse 2``: interrupted twice, resumed
each time from the checkpoint it saved on SIGTERM, it ends with the weights of a straight run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from runctl.agent.status import read_status  # noqa: E402
from runctl.store.local import LocalStore  # noqa: E402
from cli_output import json_line  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "training" / "examples" / "train_torch.py"
# Interrupted 1 s into the first attempt (most often while torch is still being imported: the
# script takes note of SIGTERM before that, and saves at its first step) and 2 s into the second
# (most often mid-training). Even at 0.3 ms a step the two cannot get through STEPS; the third
# finishes them in a few seconds (0.6 ms a step on an idle core).
STEPS, EVERY = 8000, 500


def weights_line(stdout: str) -> dict:
    return json_line(stdout, "final_step")


def test_a_rehearsal_ends_with_the_weights_of_a_straight_run(runctl_cli, tmp_path, cli_env):
    (tmp_path / "training" / "examples").mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "training" / "examples" / "train_torch.py")
    args = ["--steps", str(STEPS), "--checkpoint-every", str(EVERY)]
    # The straight run, without runctl, beside the rehearsal (its own folder and checkpoints).
    straight_dir = tmp_path / "straight"
    straight_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    straight = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=straight_dir, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        done = runctl_cli("run", "training/examples/train_torch.py", "--job-id", "torch", "--rehearse", "2",
                          "--rehearse-at", "1s,2s", "--", *args)
        straight_out, straight_err = straight.communicate(timeout=120)
    finally:
        if straight.poll() is None:
            straight.kill()
    assert straight.returncode == 0, straight_err
    assert done.returncode == 0, done.stderr
    assert "verdict: PASS" in done.stdout and "2 of 2 interruptions" in done.stdout
    assert "Traceback" not in done.stderr
    result = weights_line(done.stdout)
    assert result == weights_line(straight_out) and result["final_step"] == STEPS

    attempts = read_status(LocalStore(tmp_path / ".runctl" / "store"), "torch").attempts
    assert [(a.reason, a.exit_code) for a in attempts] == [("interrupted", 143), ("interrupted", 143),
                                                          ("completed", 0)]
    for before, after in zip(attempts, attempts[1:]):
        assert after.resumed_from == before.final_snapshot is not None
        assert after.first_step == before.last_step + 1  # saved on SIGTERM: no step lost
    # Three checkpoint files kept locally, the last one the final step's.
    folder = tmp_path / ".runctl" / "jobs" / "torch" / "checkpoints"
    assert sorted(p.name for p in folder.glob("ckpt-*.pt"))[-1] == f"ckpt-{STEPS:06d}.pt"
    assert len(list(folder.glob("ckpt-*.pt"))) == 3
