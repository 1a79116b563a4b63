"""A checkpoint writer for the crash test (tests/store/test_crash.py): run, then SIGKILLed.

    python crash_writer.py STORE_URL SOURCE_DIR [--scale F] [--once]

Forever (or once): find the latest complete snapshot's generation, write generation+1's
files into SOURCE_DIR, commit them with metadata {"gen": N}, prune to the last 3. The files
of a generation are a pure function of N (``expected_files``), so a test can check any
snapshot's content. Some files change every generation, some every other one, one never,
and the set of files varies too.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

PREFIX = "jobs/crash/checkpoints/"
MIB = 1 << 20


def _bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def expected_files(gen: int, scale: float = 1.0) -> dict[str, bytes]:
    """The files of generation ``gen``: relative path -> content."""
    files = {
        "static.bin": _bytes(0, int(2 * MIB * scale)),  # never changes: always copied
        "model.pt": _bytes(1000 + gen, int(3 * MIB * scale) + gen),  # changes every time
        "optim/state.bin": _bytes(2000 + gen // 2, int(1 * MIB * scale)),  # every other time
        "meta/step.json": b'{"gen": %d}\n' % gen,
    }
    for k in range(gen % 3 + 1):  # the set of files varies
        files[f"shards/part-{k}"] = _bytes(3000 + gen * 10 + k, 50_000 + k)
    return files


def write_generation(source: Path, gen: int, scale: float) -> None:
    for old in source.glob("shards/part-*"):
        old.unlink()
    for rel, data in expected_files(gen, scale).items():
        path = source / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("store_url")
    parser.add_argument("source", type=Path)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args(argv)

    from runctl.store import open_store
    from runctl.store.snapshots import Snapshots

    snaps = Snapshots(open_store(args.store_url), PREFIX, workers=4)
    print("ready", flush=True)  # the kill delays count from here, not from a slow interpreter start
    while True:
        latest = snaps.latest()
        gen = latest.metadata["gen"] + 1 if latest else 1
        write_generation(args.source, gen, args.scale)
        info = snaps.commit(args.source, metadata={"gen": gen})
        print(f"committed seq {info.seq} gen {gen}", flush=True)
        snaps.prune(3)
        if args.once:
            return 0


if __name__ == "__main__":
    sys.exit(main())
