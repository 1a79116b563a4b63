"""Never a silent "protected" on AWS (issue 16): a job that saves only into its own
``checkpoints/`` folder ends with nothing in the store, and ``aws run`` and ``runctl status``
say so in the same line as ``runctl run``."""

from __future__ import annotations

import json

SCRIPT = '''\
from pathlib import Path

Path("checkpoints").mkdir(exist_ok=True)
for step in range(1, 31):
    if step % 10 == 0:
        Path("checkpoints/last.pt").write_bytes(step.to_bytes(4, "little"))
print("trained 30 steps")
'''


def test_a_job_that_left_no_checkpoint_says_so_with_the_fix(cloud, project, runctl):
    (project / "plain_train.py").write_text(SCRIPT)
    done = runctl("aws", "run", "plain_train.py", "--no-docker", "--no-auto-resume", "--job-id", "plain",
                  timeout=180)
    assert done.returncode == 0, done.stderr  # the script did finish
    assert "trained 30 steps" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if line.startswith("runctl: warning: ")]
    assert len(warnings) == 2, done.stderr
    first, second = (line.removeprefix("runctl: warning: ") for line in warnings)
    assert first.startswith("job plain ended with no checkpoint in the store: nothing was written in its "
                            "checkpoint folder /")
    assert first.endswith('/jobs/plain/checkpoints (RUNCTL_CHECKPOINT_DIR). Save checkpoints there, or point runctl '
                          'at the script\'s own folder: --checkpoint-dir checkpoints --resume-args "--resume {checkpoint}"')
    assert second == ("the script wrote checkpoint-like files outside its checkpoint folder, which runctl does not "
                      "protect: checkpoints/last.pt (use --checkpoint-dir checkpoints)")

    shown = runctl("status", "plain")
    assert shown.returncode == 0, shown.stderr
    assert f"  warning: {first}" in shown.stdout.splitlines() and f"  warning: {second}" in shown.stdout.splitlines()
    status = json.loads(runctl("status", "plain", "--output", "json").stdout)
    assert status["state"] == "completed" and status["warnings"] == [first, second]
    assert status["attempts"][-1]["final_snapshot"] is None
