"""The original tool's quick start, end to end in the fake cloud, through the real CLI:

    INSTANCE_ID=$(runctl aws create --spot --instance-type t3.micro --wait --output instance-id)
    runctl aws train $INSTANCE_ID training/train.py --sync-code --wait
    runctl aws terminate $INSTANCE_ID
    runctl resources list                      # nothing left
"""

from __future__ import annotations

import json

from runctl.store import layout, open_store
from runctl.store.snapshots import Snapshots

STEPS = 600


def test_quick_start(cloud, project, runctl, straight_weights):
    created = runctl("aws", "create", "--spot", "--instance-type", "t3.micro", "--wait",
                     "--output", "instance-id")
    assert created.returncode == 0, created.stderr
    instance_id = created.stdout.strip()
    assert instance_id.startswith("i-") and "\n" not in instance_id

    trained = runctl("aws", "train", instance_id, "training/train.py", "--sync-code", "--wait",
                     "--", "--steps", str(STEPS), "--checkpoint-every", "200")
    assert trained.returncode == 0, trained.stderr + cloud.instances[instance_id].log_path.read_text()
    result = json.loads([line for line in trained.stdout.splitlines() if line.startswith("{")][-1])
    assert result == {"final_step": STEPS, "weights_sha256": straight_weights(STEPS)}

    # The checkpoints are in the emulated S3, as a complete snapshot holding the last step.
    store = open_store(f"s3://{cloud.bucket}/runctl", session=cloud.session(), endpoint_url=cloud.endpoint)
    (job_id,) = store.list_dirs("jobs/")
    latest = Snapshots(store, layout.checkpoints_prefix(job_id)).latest()
    assert latest is not None and f"ckpt-{STEPS:06d}.json" in {f.path for f in latest.files}
    status = json.loads(store.read(layout.status_key(job_id)).data)
    assert status["state"] == "completed" and status["attempts"][-1]["instance_id"] == instance_id

    # A second run after changing one file uploads that file only.
    (project / "README.md").write_text("a user's project, edited\n")
    again = runctl("aws", "train", instance_id, "training/train.py", "--job-id", "again", "--wait",
                   "--", "--steps", "200")
    assert again.returncode == 0, again.stderr
    assert "uploaded 1 of 2 files" in again.stderr, again.stderr

    terminated = runctl("aws", "terminate", instance_id)
    assert terminated.returncode == 0, terminated.stderr
    listed = runctl("resources", "list", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [], listed.stdout
