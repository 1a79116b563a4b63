"""Data-parallel PyTorch training (DDP, gloo, CPU) that survives interruptions (runctl's example).

The contract of ``training/train.py`` for a job of several processes, started by torchrun:

    runctl run training/examples/train_ddp.py --nproc-per-node 2 --rehearse 2
    torchrun --standalone --nproc-per-node 2 training/examples/train_ddp.py   # without runctl

- Every rank trains a replica of a small MLP on its own batches, chosen by the step and the
  rank alone (no sampler state to save); DDP averages the gradients.
- Every ``--checkpoint-every`` steps the ranks save model and optimizer together with
  torch.distributed.checkpoint (one file per rank plus ``.metadata``), into a temporary
  folder that each machine's local rank 0 then renames to ``step-NNNNNN``
  (``runctl.save_atomic``): a checkpoint is never seen half-written, and runctl snapshots
  none of the temporary folder. On several machines each has the files of its own ranks.
- It resumes from ``--resume PATH`` or ``RUNCTL_RESUME_FROM`` (set by runctl on every rank).
- On SIGTERM (a spot notice, a rehearsal) the ranks save at the end of the same step and exit
  143. SIGTERM reaches the ranks at slightly different moments, so every step they agree on
  it (an all_reduce of each rank's flag): no rank is left waiting in a collective for a rank
  that stopped. A lost peer fails the collective after ``--pg-timeout`` seconds instead of
  hanging the job.

Each machine's local rank 0 (on one machine: rank 0) reports progress and ends with one JSON
line ``{"final_step": N, "world_size": W, "weights_sha256": "..."}``: the same for a run that
was interrupted and resumed as for one that ran straight through with the same number of
processes (one thread per rank, deterministic algorithms).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

import runctl

# SIGTERM may come at any moment, also while torch is being imported: from here on it is only
# noted, and the training loop saves and exits at the end of the step every rank agrees on.
STOP = {"requested": False}
signal.signal(signal.SIGTERM, lambda *_: STOP.update(requested=True))

import torch  # noqa: E402  (after the handler, on purpose)
import torch.distributed as dist  # noqa: E402
import torch.distributed.checkpoint as dcp  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

INPUTS, HIDDEN = 32, 256
KEEP_LOCAL = 3  # checkpoint folders kept locally; the store keeps its own history
PROGRESS_EVERY = 10
CHECKPOINT_PREFIX = "step-"


def make_dataset(seed: int, size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    true_w = torch.rand(INPUTS, generator=gen) * 2 - 1
    x = torch.rand(size, INPUTS, generator=gen) * 2 - 1
    y = torch.sin(x @ true_w) + 0.05 * torch.randn(size, generator=gen)
    return x, y.unsqueeze(1)


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed + 1)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    return nn.Sequential(nn.Linear(INPUTS, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))


def batch_indices(seed: int, step: int, rank: int, world: int, size: int, batch: int) -> torch.Tensor:
    """The batch of ``rank`` at ``step``: a function of those alone, so a resumed run draws
    exactly the batches a straight run would have, with nothing to checkpoint for it."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step) * world + rank)
    return torch.randint(size, (batch,), generator=gen)


def weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(bytes(tensor.detach().cpu().contiguous().view(torch.uint8).flatten().tolist()))
    return digest.hexdigest()


def agree_to_stop(local: bool) -> bool:
    """True on every rank as soon as any rank was asked to stop (a collective: all ranks call it)."""
    flag = torch.tensor([1 if local else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> dict:
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optim_state, "step": torch.tensor(step, dtype=torch.int64)}


def save_checkpoint(folder: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every rank saves its part into one temporary folder of its machine; once ``dcp.save``
    returned on every rank (all parts and ``.metadata`` written), each machine's local rank 0
    renames its machine's folder into place. One machine or several: each has the folders
    of the ranks it runs, and no rank renames another machine's folder."""
    state = training_state(model, optimizer, step)
    target = folder / f"{CHECKPOINT_PREFIX}{step:06d}"
    # Rank 0 chooses the temporary name; a name, not a path: each machine has its own folder.
    names = [f".{target.name}.runctl-tmp-{uuid.uuid4().hex[:8]}" if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(names, src=0)
    temp = folder / names[0]
    dcp.save(state, checkpoint_id=str(temp))
    dist.barrier()  # every rank's files are written, on every machine
    if int(os.environ.get("LOCAL_RANK", dist.get_rank())) == 0:
        runctl.save_atomic(target, lambda place: os.replace(temp, place), step=step)
        for old in sorted(folder.glob(f"{CHECKPOINT_PREFIX}*"))[:-KEEP_LOCAL]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()  # nobody goes on (or exits) before the checkpoint is in place on every machine


def newest_checkpoint(path: Path) -> Path:
    """``path`` itself when it is a checkpoint folder, else its newest ``step-*`` folder."""
    if (path / ".metadata").is_file():
        return path
    found = sorted(p for p in path.glob(f"{CHECKPOINT_PREFIX}*") if (p / ".metadata").is_file())
    if not found:
        raise SystemExit(f"train_ddp: no checkpoint in {path} (a folder holding .metadata, or step-* folders)")
    return found[-1]


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    state = training_state(model, optimizer, 0)
    dcp.load(state, checkpoint_id=str(newest_checkpoint(path)))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return int(state["step"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pg-timeout", type=float, default=120.0,
                        help="seconds a collective waits for a peer before failing")
    parser.add_argument("--slow", type=float, default=0.0, metavar="SECONDS",
                        help="sleep this long every step (demos and tests: an interruption lands mid-training)")
    parser.add_argument("--resume", type=Path, help="checkpoint to resume from (default: RUNCTL_RESUME_FROM)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=args.pg_timeout))
    try:
        return train(args)
    finally:
        # DDP keeps the process group (and gloo's threads) alive until the model is collected; a
        # process group still alive when the interpreter shuts down aborts it ("terminate called
        # without an active exception"), so: collect the model, then destroy the group.
        gc.collect()
        dist.destroy_process_group()


def train(args: argparse.Namespace) -> int:
    rank, world = dist.get_rank(), dist.get_world_size()
    # Each machine's local rank 0 reports: each machine's agent reads its own progress file and
    # log (on one machine, that is rank 0 alone). The weights are the same on every rank.
    reports = int(os.environ.get("LOCAL_RANK", rank)) == 0
    folder = runctl.checkpoint_dir()
    x, y = make_dataset(args.seed)
    model = DistributedDataParallel(make_model(args.seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    resume = args.resume or runctl.resume_from()
    step = load_checkpoint(resume, model, optimizer) if resume else 0
    if reports:
        print(f"{'resuming at step ' + str(step) if resume else 'fresh start'}; {args.steps} steps on "
              f"{world} ranks, checkpoints in {folder}", file=sys.stderr)

    loss_fn = nn.MSELoss()
    first = step + 1
    while step < args.steps:
        index = batch_indices(args.seed, step, rank, world, len(x), args.batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[index]), y[index])
        loss.backward()  # DDP all-reduces the gradients here
        optimizer.step()
        step += 1
        if args.slow:
            time.sleep(args.slow)
        stopping = agree_to_stop(STOP["requested"] or runctl.interrupted())
        saving = step % args.checkpoint_every == 0 or stopping
        if reports and (saving or step in (first, args.steps) or step % PROGRESS_EVERY == 0):
            runctl.progress(step=step, loss=loss.item())  # one progress file per machine
        if saving:
            save_checkpoint(folder, step, model, optimizer)
        if stopping:
            if reports:
                print(f"SIGTERM: saved step {step} on {world} ranks, exiting", file=sys.stderr)
            return 143
    if step % args.checkpoint_every:
        save_checkpoint(folder, step, model, optimizer)
    if reports:
        print(json.dumps({"final_step": step, "world_size": world, "weights_sha256": weights_sha256(model.module)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
