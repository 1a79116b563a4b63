"""A small, deterministic training job that survives interruptions (runctl's example).

A two-layer network learns a fixed synthetic regression task with SGD and momentum, in
pure Python (no dependencies), so the demo runs anywhere. What makes it resumable:

- every ``--checkpoint-every`` steps it saves model, optimizer and RNG state with
  ``runctl.save_atomic`` (never half-written) into ``runctl.checkpoint_dir()``;
- it resumes from ``--resume PATH`` or ``RUNCTL_RESUME_FROM`` (set by runctl);
- on SIGTERM (a spot notice, a rehearsal) it saves at the end of the current step and exits.

It ends with one JSON line ``{"final_step": N, "weights_sha256": "..."}``: the same for a
run that was interrupted and resumed as for one that ran straight through.

    runctl run training/train.py --rehearse 2
    python training/train.py --steps 200          # without runctl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import signal
import sys
from pathlib import Path

import runctl

INPUTS, HIDDEN = 16, 24
KEEP_LOCAL = 3  # checkpoint files kept in the folder; the store keeps its own history


def make_dataset(seed: int, size: int = 512) -> list[tuple[list[float], float]]:
    rng = random.Random(seed)
    true_w = [rng.uniform(-1, 1) for _ in range(INPUTS)]
    data = []
    for _ in range(size):
        x = [rng.uniform(-1, 1) for _ in range(INPUTS)]
        y = math.sin(sum(w * v for w, v in zip(true_w, x))) + 0.05 * rng.gauss(0, 1)
        data.append((x, y))
    return data


def init_state(seed: int) -> dict:
    rng = random.Random(seed + 1)
    scale = 1 / math.sqrt(INPUTS)
    params = {
        "w1": [[rng.gauss(0, scale) for _ in range(INPUTS)] for _ in range(HIDDEN)],
        "b1": [0.0] * HIDDEN,
        "w2": [rng.gauss(0, 1 / math.sqrt(HIDDEN)) for _ in range(HIDDEN)],
        "b2": 0.0,
    }
    velocity = {
        "w1": [[0.0] * INPUTS for _ in range(HIDDEN)], "b1": [0.0] * HIDDEN, "w2": [0.0] * HIDDEN, "b2": 0.0,
    }
    return {"step": 0, "params": params, "velocity": velocity, "rng": random.Random(seed + 2).getstate()}


def predict(params: dict, x: list[float]) -> float:
    """The model's output for one input vector (what evaluation and serving use)."""
    hidden = [math.tanh(sum(w * xi for w, xi in zip(row, x)) + b) for row, b in zip(params["w1"], params["b1"])]
    return sum(w * h for w, h in zip(params["w2"], hidden)) + params["b2"]


def train_step(state: dict, batch: list[tuple[list[float], float]], lr: float, momentum: float) -> float:
    p, v = state["params"], state["velocity"]
    g_w1 = [[0.0] * INPUTS for _ in range(HIDDEN)]
    g_b1, g_w2, g_b2, loss = [0.0] * HIDDEN, [0.0] * HIDDEN, 0.0, 0.0
    for x, y in batch:
        pre = [sum(w * xi for w, xi in zip(row, x)) + b for row, b in zip(p["w1"], p["b1"])]
        hidden = [math.tanh(a) for a in pre]
        err = sum(w * h for w, h in zip(p["w2"], hidden)) + p["b2"] - y
        loss += err * err
        for j in range(HIDDEN):
            g_w2[j] += err * hidden[j]
            d = err * p["w2"][j] * (1 - hidden[j] * hidden[j])
            g_b1[j] += d
            row = g_w1[j]
            for i in range(INPUTS):
                row[i] += d * x[i]
        g_b2 += err
    n = len(batch)
    for j in range(HIDDEN):
        for i in range(INPUTS):
            v["w1"][j][i] = momentum * v["w1"][j][i] - lr * g_w1[j][i] / n
            p["w1"][j][i] += v["w1"][j][i]
        v["b1"][j] = momentum * v["b1"][j] - lr * g_b1[j] / n
        p["b1"][j] += v["b1"][j]
        v["w2"][j] = momentum * v["w2"][j] - lr * g_w2[j] / n
        p["w2"][j] += v["w2"][j]
    v["b2"] = momentum * v["b2"] - lr * g_b2 / n
    p["b2"] += v["b2"]
    return loss / n


def weights_sha256(state: dict) -> str:
    return hashlib.sha256(json.dumps(state["params"], sort_keys=True).encode()).hexdigest()


def save_checkpoint(folder: Path, state: dict) -> Path:
    path = folder / f"ckpt-{state['step']:06d}.json"
    runctl.save_atomic(path, json.dumps(state))
    for old in sorted(folder.glob("ckpt-*.json"))[:-KEEP_LOCAL]:
        old.unlink()
    return path


def load_checkpoint(path: Path) -> dict:
    if path.is_dir():  # a folder was given: take its newest checkpoint file
        path = sorted(path.glob("ckpt-*.json"))[-1]
    state = json.loads(path.read_text())
    version, internal, gauss = state["rng"]
    state["rng"] = (version, tuple(internal), gauss)
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", type=Path, help="checkpoint to resume from (default: RUNCTL_RESUME_FROM)")
    args = parser.parse_args(argv)

    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))

    folder = runctl.checkpoint_dir()
    resume = args.resume or runctl.resume_from()
    state = load_checkpoint(resume) if resume else init_state(args.seed)
    print(f"{'resuming at step ' + str(state['step']) if resume else 'fresh start'}; "
          f"{args.steps} steps, checkpoints in {folder}", file=sys.stderr)

    data = make_dataset(args.seed)
    rng = random.Random()
    rng.setstate(state["rng"])
    while state["step"] < args.steps:
        batch = [data[rng.randrange(len(data))] for _ in range(args.batch_size)]
        loss = train_step(state, batch, args.lr, momentum=0.9)
        state["step"] += 1
        state["rng"] = rng.getstate()
        runctl.progress(step=state["step"], loss=loss)
        if state["step"] % args.checkpoint_every == 0 or stop["requested"]:
            save_checkpoint(folder, state)
        if state["step"] % 2000 == 0:
            print(f"step {state['step']} loss {loss:.5f}", file=sys.stderr)
        if stop["requested"]:
            print(f"SIGTERM: saved step {state['step']}, exiting", file=sys.stderr)
            return 143
    save_checkpoint(folder, state)
    print(json.dumps({"final_step": state["step"], "weights_sha256": weights_sha256(state)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
