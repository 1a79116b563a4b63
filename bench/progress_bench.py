"""What runctl.progress() costs a training loop that calls it every step.

    python bench/progress_bench.py [--calls 200000]

Times runctl.progress(step=..., loss=...) with RUNCTL_PROGRESS_FILE set (as under runctl),
beside one write of the progress file as every call made it before writes were limited to
ten a second, and beside an empty loop. Prints markdown. Run by hand.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def per_call_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for step in range(calls):
        fn(step)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="runctl-progress-bench-"))
    target = folder / "progress.json"
    os.environ["RUNCTL_PROGRESS_FILE"] = str(target)
    import runctl
    from runctl import _script

    empty = per_call_us(lambda step: None, args.calls)
    throttled = per_call_us(lambda step: runctl.progress(step=step, loss=0.5), args.calls)
    record = {"step": 1, "first_step": 1, "time": time.time(), "metrics": {"loss": 0.5}}
    every_call = per_call_us(lambda step: _script._write_progress(str(target), record), args.calls // 100)
    print(f"| per call, {args.calls} calls | µs |\n| --- | ---: |")
    print(f"| empty loop | {empty:.2f} |")
    print(f"| runctl.progress (at most 10 writes a second) | {throttled:.2f} |")
    print(f"| one write of the progress file (what every call cost before) | {every_call:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
