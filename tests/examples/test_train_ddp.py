"""training/examples/train_ddp.py under ``runctl run --nproc-per-node 2 --rehearse 2``:
interrupted twice, each time both ranks save together (torch.distributed.checkpoint) and
exit, and the job resumes from that checkpoint to the weights of an uninterrupted two-process
run. The rehearsal is the one that once hung after its last step (ranks disagreeing on
when to stop): it must end, every time (a timeout fails it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from runctl.agent.status import read_status  # noqa: E402
from runctl.store import layout  # noqa: E402
from runctl.store.local import LocalStore  # noqa: E402
from runctl.store.snapshots import Snapshots  # noqa: E402
from cli_output import json_line  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "training" / "examples" / "train_ddp.py"
# Interrupted 10 s into each of the first two attempts: past torchrun's and the ranks' start
# (a few seconds, more on a busy machine). --slow paces the steps (5 ms each at least), so that
# even on an idle machine two attempts cannot get through STEPS before their interruption.
STEPS, EVERY, SLOW = 3000, 500, "0.005"
ARGS = ["--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--slow", SLOW]


@pytest.fixture(scope="module")
def straight_weights(tmp_path_factory) -> dict:
    """The result line of the same two-process run, straight through, under torchrun alone."""
    folder = tmp_path_factory.mktemp("straight")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(SCRIPT), *ARGS, "--slow", "0"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json_line(done.stdout, "final_step")


def test_a_two_process_rehearsal_ends_with_the_weights_of_a_straight_run(runctl_cli, tmp_path, straight_weights):
    (tmp_path / "training" / "examples").mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "training" / "examples" / "train_ddp.py")
    done = runctl_cli("run", "--nproc-per-node", "2", "--rehearse", "2", "--rehearse-at", "10s,10s",
                      "training/examples/train_ddp.py", "--job-id", "ddp", "--", *ARGS, timeout=400)
    assert done.returncode == 0, done.stderr
    assert "verdict: PASS" in done.stdout and "2 of 2 interruptions" in done.stdout, done.stdout
    result = json_line(done.stdout, "final_step")
    assert result == straight_weights and result["final_step"] == STEPS and result["world_size"] == 2

    store = LocalStore(tmp_path / ".runctl" / "store")
    attempts = read_status(store, "ddp").attempts
    assert [(a.reason, a.exit_code) for a in attempts] == [("interrupted", 143), ("interrupted", 143),
                                                          ("completed", 0)], done.stderr
    for before, after in zip(attempts, attempts[1:]):
        assert after.resumed_from == before.final_snapshot is not None
        assert after.first_step == before.last_step + 1  # both ranks saved the step they stopped at
    # The last snapshot: whole checkpoint folders only, each one file per rank and .metadata.
    latest = Snapshots(store, layout.checkpoints_prefix("ddp")).latest()
    folders: dict[str, set[str]] = {}
    for entry in latest.files:
        top, name = entry.path.split("/")
        folders.setdefault(top, set()).add(name)
    assert f"step-{STEPS:06d}" in folders
    assert all(names == {".metadata", "__0_0.distcp", "__1_0.distcp"} for names in folders.values()), folders
