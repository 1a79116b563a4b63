"""``runctl run`` never ends a job "completed" unless its final state is durable in the store.

- a checkpoint the script saves at once, before the agent's first look, still reaches the store;
- a final snapshot that keeps failing (the store's disk is full) ends the run with exit 3, one
  error line and a job that is not "completed"; the same command run again resumes from the
  latest complete snapshot and ends with the weights of a straight run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from runctl.agent.status import read_status
from runctl.store import layout
from runctl.store.local import LocalStore
from runctl.store.snapshots import Snapshots
from cli_output import json_line

# Runs the real CLI with one store fault, given as its first argument:
#   slow:NAME  writing an object named NAME takes half a second (a slow S3 PUT)
#   full:NAME  uploading a file named NAME fails as on a full disk
FAULTY_STORE_LAUNCHER = '''\
import sys
import time

from runctl.errors import StoreError
from runctl.store.local import LocalStore
from runctl.store.local_transfers import LocalTransfers

fault, name = sys.argv.pop(1).split(":", 1)
real_upload, real_write = LocalStore.upload, LocalStore.write
real_batched_upload = LocalTransfers.upload  # a snapshot's files go through a commit's batch


def failing(real):
    def upload(self, path, key, **options):
        if fault == "full" and key.endswith(name):
            raise StoreError(f"cannot upload {path} to {key}: No space left on device")
        return real(self, path, key, **options)

    return upload


def write(self, key, data, **conditions):
    if fault == "slow" and key.endswith(name):
        time.sleep(0.5)
    return real_write(self, key, data, **conditions)


LocalStore.upload, LocalStore.write = failing(real_upload), write
LocalTransfers.upload = failing(real_batched_upload)
from runctl.cli import main

main(sys.argv[1:])
'''


def run_with_fault(tmp_path: Path, env: dict, fault: str, *args) -> subprocess.CompletedProcess:
    launcher = tmp_path / "faulty_store.py"
    launcher.write_text(FAULTY_STORE_LAUNCHER)
    return subprocess.run([sys.executable, str(launcher), fault, *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)


def test_a_checkpoint_saved_before_the_agents_first_look_reaches_the_store(tmp_path, cli_env):
    # The status writes between the script's start and the sync's first look are slow (as on
    # S3): the script has saved by then. The "completed, 0 snapshots, exit 0".
    script = tmp_path / "save.sh"
    script.write_text('#!/bin/sh\nprintf "saved at start" > "$RUNCTL_CHECKPOINT_DIR/ckpt.bin"\n')
    script.chmod(0o755)
    done = run_with_fault(tmp_path, cli_env, "slow:status.json", "run", "./save.sh", "--job-id", "early")
    assert done.returncode == 0, done.stderr
    store = LocalStore(tmp_path / ".runctl" / "store")
    snapshots = Snapshots(store, layout.checkpoints_prefix("early"))
    latest = snapshots.latest()
    assert latest is not None and [f.path for f in latest.files] == ["ckpt.bin"], done.stderr
    snapshots.restore(latest, tmp_path / "restored")
    assert (tmp_path / "restored" / "ckpt.bin").read_bytes() == b"saved at start"
    assert read_status(store, "early").state == "completed"


STEPS, EVERY = 1500, 300  # checkpoints a few seconds apart: the early ones become snapshots


def test_a_final_snapshot_that_fails_exits_3_and_the_same_command_resumes(runctl_cli, train_here, tmp_path,
                                                                          cli_env, straight_weights):
    command = ("run", train_here, "--", "--steps", STEPS, "--checkpoint-every", EVERY)
    final_checkpoint = f"ckpt-{STEPS:06d}.json"  # what train.py saves last, just before it exits
    failed = run_with_fault(tmp_path, cli_env, f"full:{final_checkpoint}", *command)

    assert failed.returncode == 3, failed.stderr
    assert "Traceback" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("runctl: error:")]
    assert len(errors) == 1, failed.stderr
    assert "No space left on device" in errors[0] and "run the same command again" in errors[0].lower()
    # Nothing claims a final snapshot: the one the store holds lacks the final checkpoint.
    assert not re.search(r"final snapshot \d", failed.stderr), failed.stderr
    store = LocalStore(tmp_path / ".runctl" / "store")
    (job_id,) = store.list_dirs("jobs/")
    status = read_status(store, job_id)
    assert status.state == "failed" and "No space left on device" in status.message
    assert [(a.reason, a.final_snapshot) for a in status.attempts] == [("unsaved", None)]
    latest = Snapshots(store, layout.checkpoints_prefix(job_id)).latest()
    assert latest is not None, "the periodic snapshots before the final one should be in the store"
    assert final_checkpoint not in {f.path for f in latest.files}

    rerun = runctl_cli(*command, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert json_line(rerun.stdout, "final_step") == {"final_step": STEPS, "weights_sha256": straight_weights(STEPS)}
    status = read_status(store, job_id)
    assert status.state == "completed"
    assert status.attempts[-1].resumed_from == latest.seq
    final = Snapshots(store, layout.checkpoints_prefix(job_id)).latest()
    assert final_checkpoint in {f.path for f in final.files}
    # The local checkpoint the store never got was put aside, not deleted.
    assert list(Path(tmp_path, ".runctl", "jobs", job_id).rglob(f"displaced/**/{final_checkpoint}"))
