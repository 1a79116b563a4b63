"""Never a silent "protected" (issue 16): a script of the kind most people write saves
``checkpoints/last.pt`` every few steps and takes ``--resume PATH``. Run without options,
runctl keeps nothing of it, and says so; pointed at that folder, it protects it.

- a straight run: exit 0, the two warning lines (no checkpoint in the store; the files it
  wrote outside the folder), the warnings in --output json and in ``runctl status``;
- with ``--checkpoint-dir checkpoints --resume-args "--resume {checkpoint}"``: no warning,
  a snapshot holding last.pt;
- a rehearsal fails without the options, naming the fix, and passes with them, no step
  lost and the result of a straight run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from runctl.store.local import LocalStore
from runctl.store.snapshots import Snapshots

PLAIN_SCRIPT = '''\
import argparse, os, signal, sys, time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--save-every", type=int, default=20)
parser.add_argument("--resume")
args = parser.parse_args()
step, total = 0, 0
if args.resume:
    step, total = map(int, Path(args.resume).read_text().split())
    print(f"resumed at step {step}", flush=True)
first = step + 1
stopping = False


def stop(*_):
    global stopping
    stopping = True


def save():
    Path("checkpoints").mkdir(exist_ok=True)
    Path("checkpoints/last.pt.tmp").write_text(f"{step} {total}")
    os.replace("checkpoints/last.pt.tmp", "checkpoints/last.pt")


signal.signal(signal.SIGTERM, stop)
while step < args.steps:
    step += 1
    total = (total * 31 + step) % 1000003
    time.sleep(0.01)
    if step % args.save_every == 0:
        save()
    if stopping:
        save()
        print(f"ran steps {first}-{step}", flush=True)
        sys.exit(0)
print(f"ran steps {first}-{step}")
print(f"result {total}")
'''
FIX = '--checkpoint-dir checkpoints --resume-args "--resume {checkpoint}"'


def no_checkpoint_warning(job_id: str) -> str:
    return (f"job {job_id} ended with no checkpoint in the store: nothing was written in its checkpoint folder "
            f".runctl/jobs/{job_id}/checkpoints (RUNCTL_CHECKPOINT_DIR). Save checkpoints there, or point runctl "
            f"at the script's own folder: {FIX}")


OUTSIDE_WARNING = ("the script wrote checkpoint-like files outside its checkpoint folder, which runctl does not "
                   "protect: checkpoints/last.pt (use --checkpoint-dir checkpoints)")


def plain_here(tmp_path: Path) -> str:
    (tmp_path / "plain_train.py").write_text(PLAIN_SCRIPT)
    return "plain_train.py"


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("runctl: warning:")]


def test_a_script_saving_outside_the_folder_is_warned_of_in_one_line_each(runctl_cli, tmp_path):
    done = runctl_cli("run", plain_here(tmp_path), "--job-id", "plain")
    assert done.returncode == 0, done.stderr  # the script did finish
    assert "result " in done.stdout
    assert warning_lines(done.stderr) == [f"runctl: warning: {no_checkpoint_warning('plain')}",
                                          f"runctl: warning: {OUTSIDE_WARNING}"]
    assert done.stderr.splitlines()[-2:] == warning_lines(done.stderr)  # the last lines a person reads

    shown = runctl_cli("status", "plain")
    assert shown.returncode == 0, shown.stderr
    assert f"  warning: {no_checkpoint_warning('plain')}" in shown.stdout.splitlines()

    again = runctl_cli("run", plain_here(tmp_path), "--job-id", "plain-json", "--output", "json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["warnings"] == [no_checkpoint_warning("plain-json"), OUTSIDE_WARNING]
    assert data["status"]["attempts"][-1]["final_snapshot"] is None
    assert data["status"]["warnings"] == data["warnings"]


def test_pointed_at_the_scripts_folder_it_is_protected_without_warning(runctl_cli, tmp_path):
    done = runctl_cli("run", plain_here(tmp_path), "--job-id", "pointed", "--checkpoint-dir", "checkpoints",
                      "--resume-args", "--resume {checkpoint}", "--output", "json")
    assert done.returncode == 0, done.stderr
    assert warning_lines(done.stderr) == [] and "warning" not in done.stderr
    data = json.loads(done.stdout)
    assert data["warnings"] == []
    final = data["status"]["attempts"][-1]["final_snapshot"]
    latest = Snapshots(LocalStore(tmp_path / ".runctl" / "store"), "jobs/pointed/checkpoints/").latest()
    assert latest is not None and latest.seq == final
    assert "last.pt" in {f.path for f in latest.files}


def test_a_rehearsal_fails_without_the_options_naming_the_fix(runctl_cli, tmp_path):
    done = runctl_cli("run", plain_here(tmp_path), "--job-id", "bare", "--rehearse", "1", "--rehearse-at", "1s")
    assert done.returncode == 1, done.stderr
    assert "verdict: FAIL" in done.stdout
    problems = [line for line in done.stdout.splitlines() if line.startswith("  - ")]
    assert problems == ["  - attempt 0 left no checkpoint in the store before its interruption: save checkpoints "
                        f"in RUNCTL_CHECKPOINT_DIR, or point runctl at the script's own folder: {FIX}"]


def test_a_rehearsal_with_the_options_passes_and_loses_no_step(runctl_cli, tmp_path):
    script = plain_here(tmp_path)
    elsewhere = tmp_path / "straight"  # its checkpoints/ must not be the job's
    elsewhere.mkdir()
    straight = subprocess.run([sys.executable, tmp_path / script], cwd=elsewhere, capture_output=True, text=True,
                              timeout=60, check=True)
    shutil.rmtree(elsewhere)
    done = runctl_cli("run", script, "--job-id", "rehearsed", "--checkpoint-dir", "checkpoints",
                      "--resume-args", "--resume {checkpoint}", "--rehearse", "1", "--rehearse-at", "1s",
                      "--output", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # the script's output is on stderr, with runctl's lines
    assert data["rehearsal"]["verdict"] == "pass" and data["rehearsal"]["injected"] == 1
    assert data["warnings"] == [] and warning_lines(done.stderr) == []
    # Not anchored at the line's start: runctl's own lines share stderr with the script's.
    ran = [tuple(map(int, m)) for m in re.findall(r"ran steps (\d+)-(\d+)$", done.stderr, re.M)]
    assert len(ran) == 2 and ran[0][0] == 1 and ran[1][0] == ran[0][1] + 1  # resumed where it stopped: 0 lost
    assert ran[1][1] == 200
    result = [line for line in done.stderr.splitlines() if line.startswith("result ")]
    assert result == [line for line in straight.stdout.splitlines() if line.startswith("result ")]
