"""A training script as people write them, unaware of runctl: it saves ``checkpoints/last.pt``
every ``--save-every`` steps and resumes with ``--resume PATH``. runctl protects it as it is:

    runctl run training/examples/resume_flag.py --checkpoint-dir checkpoints \\
        --resume-args "--resume {checkpoint}" --rehearse 2 -- --steps 8000
    python training/examples/resume_flag.py --steps 8000 --step-time 0   # straight through

Linear regression by minibatch SGD, in pure Python, deterministic: the minibatch of step N
depends only on N, so a run resumed from any checkpoint ends with the same weights as one
that never stopped. It does nothing on SIGTERM (the steps since the last save are lost and
done again) and ends with one JSON line ``{"final_step": N, "weights_sha256": "..."}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
from pathlib import Path

FEATURES, BATCH, LR = 8, 16, 0.05
CHECKPOINT = Path("checkpoints") / "last.pt"


def batch(step: int) -> list[tuple[list[float], float]]:
    """The minibatch of ``step``: the same whoever asks, whenever."""
    rng = random.Random(step)
    true_w = [(i % 3) - 1 + 0.25 * i for i in range(FEATURES)]
    rows = []
    for _ in range(BATCH):
        x = [rng.uniform(-1, 1) for _ in range(FEATURES)]
        rows.append((x, sum(w * v for w, v in zip(true_w, x)) + 0.01 * rng.gauss(0, 1)))
    return rows


def train_step(weights: list[float], step: int) -> list[float]:
    grad = [0.0] * FEATURES
    for x, y in batch(step):
        error = sum(w * v for w, v in zip(weights, x)) - y
        for i, v in enumerate(x):
            grad[i] += 2 * error * v / BATCH
    return [w - LR * g for w, g in zip(weights, grad)]


def save(path: Path, step: int, weights: list[float]) -> None:
    """Write, then rename: a reader (or a crash) never sees half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps({"step": step, "weights": weights}))
    os.replace(temp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--step-time", type=float, default=0.005, help="seconds a step takes (a bigger model)")
    parser.add_argument("--resume", type=Path, help="a checkpoint to resume from")
    args = parser.parse_args()

    step, weights = 0, [0.0] * FEATURES
    if args.resume:
        state = json.loads(args.resume.read_text())
        step, weights = state["step"], state["weights"]
        print(f"resumed from {args.resume} at step {step}", flush=True)
    while step < args.steps:
        weights = train_step(weights, step)
        step += 1
        time.sleep(args.step_time)
        if step % args.save_every == 0 or step == args.steps:
            save(CHECKPOINT, step, weights)
    digest = hashlib.sha256(json.dumps(weights).encode()).hexdigest()
    print(json.dumps({"final_step": step, "weights_sha256": digest}), flush=True)


if __name__ == "__main__":
    main()
