"""training/examples/resume_flag.py: a script unaware of runctl that saves checkpoints/last.pt
and takes --resume PATH. Resumed from any of its checkpoints, it ends with the weights of a
straight run (what the README's rehearsal of it relies on; that block runs in tests/test_docs.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "training" / "examples" / "resume_flag.py"


def run(cwd: Path, *args) -> list[str]:
    done = subprocess.run([sys.executable, str(SCRIPT), "--step-time", "0", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip().splitlines()


def test_a_run_resumed_from_a_checkpoint_ends_as_a_straight_run(tmp_path):
    straight = json.loads(run(tmp_path, "--steps", 1200, "--save-every", 300)[-1])
    assert straight["final_step"] == 1200
    saved = json.loads((tmp_path / "checkpoints" / "last.pt").read_text())
    assert saved["step"] == 1200
    # Stop at 600 (its last save), then resume from that checkpoint elsewhere.
    first = tmp_path / "first"
    first.mkdir()
    run(first, "--steps", 600, "--save-every", 300)
    second = tmp_path / "second"
    second.mkdir()
    shutil.copy(first / "checkpoints" / "last.pt", second / "from.pt")
    lines = run(second, "--steps", 1200, "--save-every", 300, "--resume", "from.pt")
    assert lines[0] == "resumed from from.pt at step 600"
    assert json.loads(lines[-1]) == straight
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))  # the rename left nothing behind
