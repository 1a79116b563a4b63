"""Evaluate a job's latest checkpoint of training/train.py's model (runctl's example).

It fetches the job's latest complete snapshot from the store (verified: sizes and sha256)
with ``runctl.checkpoints.fetch_latest``, or takes a checkpoint file you already have, and
measures the model on its training set and on held-out examples of the same task. The
metrics are one JSON document: the job, the snapshot's seq, the checkpoint's step, and
``n``, ``mse`` and ``mae`` for each dataset.

    python training/examples/model_evaluation.py JOB_ID                    # default store (.runctl/store)
    python training/examples/model_evaluation.py JOB_ID --store s3://bucket/runs
    python training/examples/model_evaluation.py s3://bucket/runs/jobs/JOB_ID --metrics-out metrics.json
    python training/examples/model_evaluation.py --checkpoint checkpoints/ckpt-000300.json

The model's code is train.py's own (make_dataset, load_checkpoint, predict), imported,
not copied. Errors are one line on stderr with runctl's exit codes: 2 for bad arguments,
3 when the store has no such job or no complete snapshot.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # training/, for train.py

from train import load_checkpoint, make_dataset, predict  # noqa: E402

from runctl.checkpoints import default_store_url, fetch_latest, jobs_hint  # noqa: E402
from runctl.errors import NotFoundError, RunctlError, UsageError  # noqa: E402
from runctl.store import open_store  # noqa: E402
from runctl.store.layout import JOB_ID_PATTERN  # noqa: E402

_JOB_IN_URL = re.compile(r"/jobs/([^/]+)/checkpoints/[^/]+/?$")


def evaluate(params: dict, data: list[tuple[list[float], float]]) -> dict:
    errors = [predict(params, x) - y for x, y in data]
    return {"n": len(errors), "mse": sum(e * e for e in errors) / len(errors),
            "mae": sum(abs(e) for e in errors) / len(errors)}


def datasets(seed: int, heldout: int) -> dict[str, list]:
    """train.py's training set for ``seed``, and ``heldout`` further examples of the same
    task: make_dataset draws the task, then the examples, from one seeded generator, so a
    longer dataset of the same seed begins with the training set. (Another seed would be
    another task.)"""
    train = make_dataset(seed)
    return {"train": train, "heldout": make_dataset(seed, len(train) + heldout)[len(train):]}


def fetch(args: argparse.Namespace, folder: Path) -> tuple[Path, dict]:
    """The checkpoint file to evaluate, and where it came from."""
    if args.checkpoint:
        if not args.checkpoint.exists():
            raise UsageError(f"checkpoint {args.checkpoint} does not exist")
        return args.checkpoint, {"job": None, "seq": None, "snapshot": None}
    # With --job, JOB_OR_URL (if given) is the store to find the job in.
    target, store = (args.job, args.source or args.store) if args.job else (args.source, args.store)
    try:
        fetched = fetch_latest(target, folder, store=store, seq=args.seq)
    except NotFoundError as exc:
        if JOB_ID_PATTERN.match(target) and not Path(target).exists():  # a job id: is there such a job?
            opened = open_store(store or default_store_url())
            if target not in opened.list_dirs("jobs/"):
                raise NotFoundError(f"no job {target}", hint=jobs_hint(opened)) from exc
        raise
    if fetched.newest is None:
        raise UsageError(f"snapshot {fetched.seq} at {fetched.snapshot.url} holds no checkpoint")
    job = _JOB_IN_URL.search(fetched.snapshot.url)
    return fetched.newest, {"job": job[1] if job else None, "seq": fetched.seq, "snapshot": fetched.snapshot.url}


def read_state(path: Path) -> dict:
    try:
        return load_checkpoint(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise UsageError(f"{path} is not a checkpoint of training/train.py ({type(exc).__name__}: {exc})") from exc


def write_metrics(metrics: dict, out: Path | None) -> None:
    text = json.dumps(metrics, indent=2)
    if out is None:
        print(text)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write the metrics to {out}: {exc.strerror}") from exc
    print(f"metrics of step {metrics['step']} written to {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", metavar="JOB_OR_URL",
                        help="a job id, a URL naming a job (<store>/jobs/<id>), or a folder of snapshots")
    parser.add_argument("--job", help="the job id, when JOB_OR_URL (or --store) is the store")
    parser.add_argument("--store",
                        help="the store to find a job id in (default: [checkpoint] store, else .runctl/store)")
    parser.add_argument("--seq", type=int, help="evaluate this snapshot instead of the latest")
    parser.add_argument("--checkpoint", type=Path, help="evaluate this checkpoint file instead of a job's")
    parser.add_argument("--seed", type=int, default=0, help="the --seed the job was trained with (default 0)")
    parser.add_argument("--heldout", type=int, default=512, help="held-out examples to evaluate on (default 512)")
    parser.add_argument("--metrics-out", type=Path, help="write the metrics JSON here (default: stdout)")
    args = parser.parse_args(argv)
    if bool(args.checkpoint) == bool(args.source or args.job):
        parser.error("give a job (JOB_OR_URL, or --job) or --checkpoint PATH")

    try:
        with tempfile.TemporaryDirectory(prefix="runctl-eval-") as scratch:
            path, origin = fetch(args, Path(scratch))
            state = read_state(path)
        metrics = {**origin, "step": state["step"], "checkpoint": path.name, "seed": args.seed,
                   **{name: evaluate(state["params"], data)
                      for name, data in datasets(args.seed, args.heldout).items()}}
        write_metrics(metrics, args.metrics_out)
    except RunctlError as exc:
        print(f"model_evaluation: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
