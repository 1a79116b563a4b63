"""Issue 16's newcomer, with PyTorch: a script that knows nothing of runctl, saves
``checkpoints/last.pt`` with ``torch.save`` every 500 steps (and on SIGTERM), and takes
``--resume PATH``. Rehearsed twice with ``--checkpoint-dir checkpoints --resume-args
"--resume {checkpoint}"`` it passes, loses no step and ends with the straight run's weights;
rehearsed without the options it fails, naming the fix."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torch")

NEWCOMER = '''\
import argparse, hashlib, json, os, signal, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=3000)
parser.add_argument("--resume")
args = parser.parse_args()
torch.manual_seed(0)
torch.set_num_threads(1)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
step = 0
if args.resume:
    state = torch.load(args.resume)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    step = state["step"]
first = step + 1


def save():
    os.makedirs("checkpoints", exist_ok=True)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
               "checkpoints/last.pt.tmp")
    os.replace("checkpoints/last.pt.tmp", "checkpoints/last.pt")


while step < args.steps:
    step += 1
    gen = torch.Generator().manual_seed(step)
    x = torch.rand(16, 8, generator=gen)
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True).sin()).backward()
    optimizer.step()
    time.sleep(0.002)
    if step % 500 == 0 or stop:
        save()
    if stop:
        print(f"ran steps {first}-{step}", flush=True)
        sys.exit(0)
digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values()))
print(f"ran steps {first}-{step}")
print(json.dumps({"final_step": step, "weights_sha256": digest.hexdigest()}))
'''
FIX = '--checkpoint-dir checkpoints --resume-args "--resume {checkpoint}"'


@pytest.fixture
def newcomer(tmp_path):
    (tmp_path / "train.py").write_text(NEWCOMER)
    return "train.py"


def test_rehearsed_twice_with_the_options_it_passes_loses_no_step_and_ends_with_the_straight_weights(
        runctl_cli, tmp_path, newcomer):
    straight_dir = tmp_path / "straight"
    straight_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    straight = subprocess.run([sys.executable, str(tmp_path / newcomer)], cwd=straight_dir, env=env,
                              capture_output=True, text=True, timeout=180, check=True)
    shutil.rmtree(straight_dir)
    done = runctl_cli("run", newcomer, "--job-id", "newcomer", "--checkpoint-dir", "checkpoints",
                      "--resume-args", "--resume {checkpoint}", "--rehearse-at", "5s,3s", "--output", "json",
                      timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # the script's own output is on stderr, with runctl's lines
    assert data["rehearsal"]["verdict"] == "pass" and data["rehearsal"]["injected"] == 2, data["rehearsal"]
    # The one warning allowed: a snapshot begun as the script rewrote last.pt, retried with
    # the next version (the agent times uploads to miss rewrites; a busy machine beat it once).
    retried = re.compile(r"checkpoint snapshot failed, will retry: .*/last\.pt changed while being snapshotted$")
    assert [w for w in data["warnings"] if not retried.match(w)] == []
    ran = [tuple(map(int, m)) for m in re.findall(r"ran steps (\d+)-(\d+)$", done.stderr, re.M)]
    assert len(ran) == 3 and ran[0][0] == 1 and ran[-1][1] == 3000, done.stderr
    for before, after in zip(ran, ran[1:]):
        assert after[0] == before[1] + 1  # resumed where it stopped: no step lost
    final = [line for line in done.stderr.splitlines() if line.startswith('{"final_step"')]
    assert final == [straight.stdout.strip().splitlines()[-1]]


def test_rehearsed_without_the_options_it_fails_naming_the_fix(runctl_cli, newcomer):
    done = runctl_cli("run", newcomer, "--job-id", "bare", "--rehearse-at", "5s", timeout=300)
    assert done.returncode == 1, done.stderr
    assert "verdict: FAIL" in done.stdout
    problems = [line for line in done.stdout.splitlines() if line.startswith("  - ")]
    assert problems == ["  - attempt 0 left no checkpoint in the store before its interruption: save checkpoints "
                        f"in RUNCTL_CHECKPOINT_DIR, or point runctl at the script's own folder: {FIX}"]
