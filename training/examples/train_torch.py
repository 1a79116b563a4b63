"""A small, deterministic PyTorch training job that survives interruptions (runctl's example).

The same contract as ``training/train.py``, with PyTorch on the CPU: a two-layer MLP learns a
fixed synthetic regression task with SGD and momentum. What makes it resumable:

- every ``--checkpoint-every`` steps it saves model, optimizer and RNG state (torch's global
  generator and the data sampler's) with ``runctl.save_atomic`` into ``runctl.checkpoint_dir()``;
- it resumes from ``--resume PATH`` or ``RUNCTL_RESUME_FROM`` (set by runctl);
- on SIGTERM (a spot notice, a rehearsal) it saves at the end of the current step and exits 143.

It ends with one JSON line ``{"final_step": N, "weights_sha256": "..."}``: the same for a run
that was interrupted and resumed as for one that ran straight through (one thread and
deterministic algorithms, so every step computes the same bits).

    pip install 'runctl[torch]'
    runctl run training/examples/train_torch.py --rehearse 2
    python training/examples/train_torch.py --steps 2000      # without runctl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
from pathlib import Path

import runctl

# SIGTERM may come at any moment, also during the second or two that `import torch` takes: from
# here on it is only noted, and the training loop saves and exits at the end of its next step.
STOP = {"requested": False}
signal.signal(signal.SIGTERM, lambda *_: STOP.update(requested=True))

import torch  # noqa: E402  (after the handler, on purpose)
from torch import nn  # noqa: E402

INPUTS, HIDDEN = 32, 256
KEEP_LOCAL = 3  # checkpoint files kept in the folder; the store keeps its own history
# loss.item() waits for the device (on a GPU): report every 10th step (and the first, and each saved one).
PROGRESS_EVERY = 10


def make_dataset(seed: int, size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    true_w = torch.rand(INPUTS, generator=gen) * 2 - 1
    x = torch.rand(size, INPUTS, generator=gen) * 2 - 1
    y = torch.sin(x @ true_w) + 0.05 * torch.randn(size, generator=gen)
    return x, y.unsqueeze(1)


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed + 1)
    return nn.Sequential(nn.Linear(INPUTS, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))


def weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(bytes(tensor.detach().cpu().contiguous().view(torch.uint8).flatten().tolist()))
    return digest.hexdigest()


def save_checkpoint(folder: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    sampler: torch.Generator) -> Path:
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "sampler_rng": sampler.get_state(),
    }
    path = folder / f"ckpt-{step:06d}.pt"
    runctl.save_atomic(path, lambda tmp: torch.save(state, tmp))
    for old in sorted(folder.glob("ckpt-*.pt"))[:-KEEP_LOCAL]:
        old.unlink()
    return path


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    sampler: torch.Generator) -> int:
    if path.is_dir():  # a folder was given: take its newest checkpoint file
        path = sorted(path.glob("ckpt-*.pt"))[-1]
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    sampler.set_state(state["sampler_rng"])
    return state["step"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=45000)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", type=Path, help="checkpoint to resume from (default: RUNCTL_RESUME_FROM)")
    args = parser.parse_args(argv)

    # Same bits on every run: one thread (no reduction-order differences), no nondeterministic kernels.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    folder = runctl.checkpoint_dir()
    x, y = make_dataset(args.seed)
    model = make_model(args.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sampler = torch.Generator().manual_seed(args.seed + 2)
    resume = args.resume or runctl.resume_from()
    step = load_checkpoint(resume, model, optimizer, sampler) if resume else 0
    print(f"{'resuming at step ' + str(step) if resume else 'fresh start'}; "
          f"{args.steps} steps, checkpoints in {folder}", file=sys.stderr)

    loss_fn = nn.MSELoss()
    first = step + 1
    while step < args.steps:
        index = torch.randint(len(x), (args.batch_size,), generator=sampler)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[index]), y[index])
        loss.backward()
        optimizer.step()
        step += 1
        saving = step % args.checkpoint_every == 0 or STOP["requested"]
        if saving or step in (first, args.steps) or step % PROGRESS_EVERY == 0:
            runctl.progress(step=step, loss=loss.item())
        if saving:
            save_checkpoint(folder, step, model, optimizer, sampler)
        if step % 5000 == 0:
            print(f"step {step} loss {loss.item():.5f}", file=sys.stderr)
        if STOP["requested"]:
            print(f"SIGTERM: saved step {step}, exiting", file=sys.stderr)
            return 143
    save_checkpoint(folder, step, model, optimizer, sampler)
    print(json.dumps({"final_step": step, "weights_sha256": weights_sha256(model)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
