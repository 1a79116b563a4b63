"""Agent cost: CPU and peak memory while the child sleeps, and `runctl run` wall overhead.

    python bench/agent_bench.py [--sleep 60] [--runs 15]

Prints a markdown table. Run by hand; figures go to docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RUNCTL = [sys.executable, "-m", "runctl"]


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def agent_cost(sleep_s: float, workdir: Path) -> dict:
    """Start `runctl run` on a script that sleeps; read the agent's own usage near the end."""
    script = workdir / "sleeper.py"
    script.write_text(f"import time\ntime.sleep({sleep_s})\n")
    proc = subprocess.Popen([*RUNCTL, "run", str(script), "--job-id", f"sleep-{time.time_ns()}"],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent = psutil.Process(proc.pid)
    time.sleep(3)  # start-up is measured separately, by the overhead figure
    start_cpu = agent.cpu_times()
    start = time.monotonic()
    time.sleep(sleep_s - 5)
    end_cpu = agent.cpu_times()
    elapsed = time.monotonic() - start
    peak_kib = _vm_hwm_kib(proc.pid)
    proc.wait()
    cpu = (end_cpu.user + end_cpu.system) - (start_cpu.user + start_cpu.system)
    return {"cpu_s": cpu, "elapsed_s": elapsed, "cpu_pct": 100 * cpu / elapsed, "peak_mib": peak_kib / 1024}


def _median_wall(cmd: list[str], cwd: Path, runs: int) -> float:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd(i) if callable(cmd) else cmd, cwd=cwd, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def overhead(runs: int, workdir: Path) -> dict:
    script = workdir / "trivial.py"
    script.write_text("print('hello')\n")
    direct = _median_wall([sys.executable, str(script)], workdir, runs)
    wrapped = _median_wall(lambda i: [*RUNCTL, "run", str(script), "--job-id", f"t-{time.time_ns()}-{i}"], workdir, runs)
    return {"direct_s": direct, "runctl_s": wrapped, "overhead_ms": 1000 * (wrapped - direct)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleep", type=float, default=60)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        over = overhead(args.runs, workdir)
        cost = agent_cost(args.sleep, workdir)
    print(f"| measure | value |\n| --- | --- |")
    print(f"| agent CPU while the child sleeps {args.sleep:g} s | {cost['cpu_s']:.2f} s over {cost['elapsed_s']:.0f} s "
          f"= {cost['cpu_pct']:.2f}% of a core |")
    print(f"| agent peak RSS (VmHWM) | {cost['peak_mib']:.1f} MiB |")
    print(f"| `python trivial.py`, median of {args.runs} | {1000 * over['direct_s']:.0f} ms |")
    print(f"| `runctl run trivial.py`, median of {args.runs} | {1000 * over['runctl_s']:.0f} ms |")
    print(f"| overhead of runctl run | {over['overhead_ms']:.0f} ms |")


if __name__ == "__main__":
    main()
