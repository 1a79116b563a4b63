"""``runctl run`` makes a rewritten checkpoint durable as it settles, and each snapshot records
the step of the checkpoint it holds, not the step the script had reached by upload time.

The script rewrites ``checkpoints/last.pt`` (its step inside) every 100 steps, reporting
``runctl.progress`` every step and going on training while the agent uploads: with
``save_atomic`` (the step recorded with the save) and with a plain write after reporting
the step (the step reported before the file was written).
"""

from __future__ import annotations

import pytest

from runctl.store import layout
from runctl.store.local import LocalStore
from runctl.store.snapshots import Snapshots

SCRIPT = '''\
import sys
import time
from pathlib import Path

import runctl

mode, folder = sys.argv[1], Path(sys.argv[2])
folder.mkdir(parents=True, exist_ok=True)
for step in range(1, 431):
    time.sleep(0.02)  # a step of training
    runctl.progress(step=step)
    if step % 100 == 0:
        data = f"step {step}".encode()
        if mode == "atomic":
            runctl.save_atomic(folder / "last.pt", data)
        else:
            (folder / "last.pt").write_bytes(data)
print("trained to step", step)
'''


@pytest.mark.parametrize("mode", ["atomic", "direct"])
def test_each_snapshot_records_the_step_of_the_checkpoint_it_holds(runctl_cli, tmp_path, mode):
    (tmp_path / "rewrite.py").write_text(SCRIPT)
    done = runctl_cli("run", "rewrite.py", "--job-id", mode, "--checkpoint-dir", "checkpoints",
                      "--keep-last-n", 50, "--", mode, "checkpoints")
    assert done.returncode == 0, done.stderr
    assert "trained to step 430" in done.stdout
    snapshots = Snapshots(LocalStore(tmp_path / ".runctl" / "store"), layout.checkpoints_prefix(mode))
    held = []
    for info in snapshots.list():
        target = tmp_path / "restored" / str(info.seq)
        snapshots.restore(info, target)
        held.append((int((target / "last.pt").read_text().split()[1]), info.metadata["step"]))
    # Every snapshot: the step recorded is the step inside the file it holds.
    assert held and all(in_file == recorded for in_file, recorded in held), held
    # The rewrites reached the store while the script ran (not one per minute): each version
    # at most once, in order, the last one the checkpoint the script ended with.
    steps = [in_file for in_file, _ in held]
    assert len(steps) >= 2 and steps == sorted(set(steps)) and steps[-1] == 400, held
    assert set(steps) <= {100, 200, 300, 400}
