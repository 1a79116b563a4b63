"""A newcomer's script on AWS, end to end in the fake cloud, through the real CLI. The script
knows nothing of runctl: it saves ``checkpoints/last.pt`` (relative to where it runs) every
N steps and takes ``--resume PATH``. So

    runctl aws run train.py --spot --auto-resume --checkpoint-dir checkpoints \\
        --resume-args "--resume {checkpoint}" -- --steps N

must watch that folder inside the job's code folder on the instance, and after a spot
interruption restore it there on the new instance and pass the checkpoint as --resume: the
job ends with the straight run's result. And ``runctl aws run NAME`` runs the [jobs.NAME] of
the project's .runctl.toml, its keys (args, checkpoint folder, env, instance type) applied.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from runctl.agent.status import read_status
from runctl.store import layout
from runctl.store.snapshots import Snapshots
from waiting import wait_for

from .test_auto_resume import FAST_SYNC, job_store, running_with_progress, the_job

NEWCOMER = """\
import argparse, json, os, time

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=1000)
parser.add_argument("--every", type=int, default=100)
parser.add_argument("--resume")
parser.add_argument("--step-seconds", type=float, default=0.003)
args = parser.parse_args()

state = {"step": 0, "value": 1}
if args.resume:
    with open(args.resume) as f:
        state = json.load(f)
    print(f"resumed from step {state['step']}", flush=True)
os.makedirs("checkpoints", exist_ok=True)
for step in range(state["step"] + 1, args.steps + 1):
    state = {"step": step, "value": (state["value"] * 31 + step) % 1_000_000_007}
    if step % args.every == 0:
        with open("last.pt.partial", "w") as f:
            json.dump(state, f)
        os.replace("last.pt.partial", "checkpoints/last.pt")
    time.sleep(args.step_seconds)
print(json.dumps({"final_step": state["step"], "value": state["value"], "greeting": os.environ.get("GREETING")}))
"""


# A checkpoint every 2 s: runctl snapshots a file once it has not moved for a second.
RUN = ("--steps", "800", "--every", "100", "--step-seconds", "0.02")


def straight_run(tmp_path, *args: str) -> dict:
    folder = tmp_path / "straight"
    folder.mkdir()
    (folder / "train.py").write_text(NEWCOMER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    done = subprocess.run([sys.executable, "train.py", *args], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def result_of(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def latest_files(store, job_id: str) -> set[str]:
    latest = Snapshots(store, layout.checkpoints_prefix(job_id)).latest()
    return {f.path for f in latest.files} if latest is not None else set()


def test_a_newcomer_script_resumes_from_its_own_checkpoint_folder_after_a_spot_interruption(
        cloud, project, runctl_bg, tmp_path):
    (project / "train.py").write_text(NEWCOMER)
    (project / "checkpoints").mkdir()
    (project / "checkpoints" / "last.pt").write_text("a local run's checkpoint: never uploaded as code\n")
    proc = runctl_bg("aws", "run", "train.py", "--no-docker", "--spot", "-t", "t3.micro", "--auto-resume",
                     "--checkpoint-dir", "checkpoints", "--resume-args", "--resume {checkpoint}",
                     "--", *RUN, **FAST_SYNC)
    store = job_store(cloud)
    job_id = wait_for("the job", lambda: the_job(store), proc)
    instance_id = wait_for("progress", lambda: running_with_progress(store, job_id, 0), proc, timeout=90)
    assert latest_files(store, job_id) == {"last.pt"}  # the folder the script writes in is the one watched
    cloud.interrupt(instance_id)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err

    assert result_of(out) == straight_run(tmp_path, *RUN)
    first, second = read_status(store, job_id).attempts
    assert first.reason == "interrupted" and second.reason == "completed"
    assert second.instance_id != instance_id and second.resumed_from is not None
    resumed_at = int(out.split("resumed from step ")[1].split()[0])
    assert resumed_at > 0 and resumed_at % 100 == 0  # --resume got the restored checkpoints/last.pt
    assert latest_files(store, job_id) == {"last.pt"}


def test_aws_run_by_job_name(cloud, project, runctl, tmp_path):
    (project / "train.py").write_text(NEWCOMER)
    (project / ".runctl.toml").write_text(
        '[jobs.train]\nscript = "train.py"\nargs = ["--steps", "300"]\ncheckpoint_dir = "checkpoints"\n'
        'resume_args = ["--resume", "{checkpoint}"]\ninstance_type = "t3.micro"\n\n'
        '[jobs.train.env]\nGREETING = "from the job table"\n')
    done = runctl("aws", "run", "train", "--no-docker", "--", "--every", "50")
    assert done.returncode == 0, done.stderr

    expected = straight_run(tmp_path, "--steps", "300", "--every", "50")
    assert result_of(done.stdout) == {**expected, "greeting": "from the job table"}
    store = job_store(cloud)
    (job_id,) = store.list_dirs("jobs/")
    assert latest_files(store, job_id) == {"last.pt"}
    (attempt,) = read_status(store, job_id).attempts
    assert attempt.instance_type == "t3.micro"  # the table's, not [aws] default_instance_type

    unknown = runctl("aws", "run", "trian", "--no-docker")
    assert unknown.returncode == 2
    assert "or a job of .runctl.toml: train" in unknown.stderr.strip().splitlines()[-1]

    # Refused before any instance is launched: a folder that is not one of the project's own.
    for folder, why in (("../elsewhere", "leads out of the project"), (".", "is the job's working folder")):
        refused = runctl("aws", "run", "train", "--no-docker", "--checkpoint-dir", folder)
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
        assert "launched" not in refused.stderr
