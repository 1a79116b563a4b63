"""A job of two processes on AWS, in the fake cloud, through the real CLI:

    runctl aws run training/train_ddp.py --nproc-per-node 2 --auto-resume -- ...

The instance's agent starts the script under torchrun; a spot notice stops both ranks,
which save together; the group's next instance resumes them from that checkpoint, again
with two processes, to the weights of an uninterrupted two-process run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from runctl.agent.status import read_status
from waiting import wait_for

from .conftest import REPO
from .test_auto_resume import FAST_SYNC, final_result, job_store, reporting_progress, the_job

pytest.importorskip("torch")

SCRIPT = REPO / "training" / "examples" / "train_ddp.py"
ARGS = ["--steps", "2500", "--checkpoint-every", "250"]


def straight_result(folder) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(SCRIPT), *ARGS], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


# The notice's two minutes compressed to 20 s: both ranks' save on SIGTERM, on a busy machine.
# The instances' image has torch and numpy (torch.distributed.checkpoint needs it), as a Deep
# Learning AMI does; runctl installs no job packages.
# An image of its own (runctl, torch, numpy), not the session's runctl-only interpreter.
@pytest.mark.fake_cloud(notice_deadline_s=20.0, image_packages=("torch", "numpy"), agent_python=None)
def test_a_two_process_job_resumes_on_the_next_instance_to_the_weights_of_a_straight_run(
        cloud, runctl_bg, project, tmp_path):
    shutil.copy(SCRIPT, project / "training" / "train_ddp.py")
    proc = runctl_bg("aws", "run", "training/train_ddp.py", "--spot", "-t", "t3.micro", "--auto-resume",
                     "--nproc-per-node", "2", "--", *ARGS, "--slow", "0.01", **FAST_SYNC)
    store = job_store(cloud)
    job_id = wait_for("the job", lambda: the_job(store), proc)
    first = wait_for("attempt 0 to make progress", lambda: reporting_progress(store, job_id, 0), proc, timeout=120)
    cloud.interrupt(first)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err

    attempts = read_status(store, job_id).attempts
    assert [(a.reason, a.exit_code) for a in attempts] == [("interrupted", 143), ("completed", 0)], attempts
    assert attempts[0].instance_id == first != attempts[1].instance_id
    assert attempts[1].resumed_from == attempts[0].final_snapshot is not None
    assert attempts[1].first_step == attempts[0].last_step + 1  # both ranks saved the step they stopped at
    assert json.loads(store.read(f"jobs/{job_id}/job.json").data)["nproc_per_node"] == "2"
    straight = tmp_path / "straight"
    straight.mkdir()
    assert final_result(out) == straight_result(straight)
