"""Where the test suite's time goes: CPU by kind of process, and how busy the machine was.

    python bench/suite_cpu_bench.py [--interval 1] [-- COMMAND ...]

Runs COMMAND (default: the README's test command, ``pytest -q -n auto --dist loadgroup``,
with this interpreter) and, once a second, reads the CPU time of every process on the
machine from /proc (so run it on a quiet machine). A process is charged the CPU it used
while the command ran (from its first sighting; one that lived less than an interval may
be missed) under a kind named by its command line: the example training scripts, runctl's
agents and CLI, torchrun, the pytest workers (their tests, and the moto server each runs in
a thread), Docker. Prints the wall time, the machine's busy share and a markdown table.
Linux only. Run by hand: it is the evidence for where the suite's time could shrink
(docs/PERFORMANCE.md), not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter

#: (a piece of the command line, the kind it names); the first match wins.
KINDS = (
    ("train_ddp.py", "training/examples/train_ddp.py"),
    ("torch.distributed.run", "torchrun"),
    ("TORCH_ELASTIC", "torchrun"),
    ("train.py", "training/train.py (and copies)"),
    ("resume_flag.py", "training/examples/resume_flag.py"),
    ("examples/", "other examples"),
    ("runctl.agent", "runctl agents"),
    ("runctl.testing.cloud", "fake cloud (command line)"),
    ("-m runctl", "runctl CLI"),
    ("bin/runctl", "runctl CLI"),
    ("exec(eval(sys.stdin", "pytest workers (tests, moto)"),
    ("bin/pytest", "pytest (main process)"),
    ("-m pytest", "pytest (main process)"),
    ("pip install", "pip"),
    ("docker", "Docker"),
    ("containerd", "Docker"),
)


def kind_of(command_line: str) -> str:
    return next((kind for piece, kind in KINDS if piece in command_line), "other")


def cpu_seconds(hz: int) -> dict[tuple[str, str], tuple[float, str]]:
    """Every process's (pid, start time) -> (CPU seconds so far, command line)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                fields = stat.read().rsplit(")", 1)[1].split()
                command_line = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended while being read
            continue
        if command_line:
            found[(pid, fields[19])] = ((int(fields[11]) + int(fields[12])) / hz, command_line)
    return found


def machine_times() -> tuple[int, int]:
    """(all, idle) jiffies of the whole machine so far."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("command", nargs="*", help="default: the README's test command")
    args = parser.parse_args()
    command = args.command or [sys.executable, "-m", "pytest", "-q", "-n", "auto", "--dist", "loadgroup"]
    hz = os.sysconf("SC_CLK_TCK")

    before = {key: cpu for key, (cpu, _) in cpu_seconds(hz).items()}  # charged only what comes after
    latest: dict[tuple[str, str], tuple[float, str]] = {}
    all_before, idle_before = machine_times()
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        latest.update(cpu_seconds(hz))
        time.sleep(args.interval)
    wall = time.monotonic() - started
    all_after, idle_after = machine_times()

    by_kind: Counter[str] = Counter()
    for key, (cpu, command_line) in latest.items():
        if key[0] != str(os.getpid()):
            by_kind[kind_of(command_line)] += cpu - before.get(key, 0.0)
    total = sum(by_kind.values())
    print(f"`{' '.join(command)}`: exit {proc.returncode}, {wall:.0f} s wall, "
          f"machine busy {1 - (idle_after - idle_before) / (all_after - all_before):.0%} "
          f"on {os.cpu_count()} CPUs, {total:.0f} CPU-seconds charged\n")
    print("| kind of process | CPU seconds | share |")
    print("| --- | ---: | ---: |")
    for kind, cpu in by_kind.most_common():
        print(f"| {kind} | {cpu:.0f} | {cpu / total:.0%} |")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
