"""Spot notices: how fast the agent acts on one, and how soon the final checkpoint is durable.

    python bench/notice_bench.py [--count 50] [--latency-on local,s3] [--sizes-mib 100,1024]
                                 [--stores local,s3] [--deadline 120] [--jitter 1] [--workdir DIR]

Every case runs the real `python -m runctl run --spot-notices` as a subprocess, against
the IMDS emulator (runctl.testing.imds, in this process, over HTTP) and a store: a local
folder, or a moto S3 server in a child process (as bench/store_bench.py starts it).

1. notice -> SIGTERM: --count short runs; each script marks itself ready, the notice is
   scheduled to become visible 1 s + uniform(0, --jitter) later (the jitter spreads the
   notice over the phase of the agent's 1 s polling: with --jitter 0 every notice lands just
   after a poll, the worst case), and the script stamps time.time() when SIGTERM arrives. (A spot reclaim ends a `runctl run` as interrupted, so one run per notice.)
   Also split into "visible -> first served" (the source's 1 s polling) and "first
   served -> SIGTERM" (the agent: deadline estimate, interrupt file, status.json, signal).
2. notice -> durable final snapshot: per store and size, the script (nothing saved
   before) saves a checkpoint of that size with runctl.save_atomic on SIGTERM and exits;
   the time from the notice becoming visible to the agent's "snapshot N durable" line
   (stamped as read from its stderr; the manifest is checked in the store too).

Prints markdown tables. Run by hand; not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_bench import moto_endpoint  # noqa: E402  (a ThreadedMotoServer in a child process)

from runctl.interruptions.ec2 import parse_imds_time  # noqa: E402
from runctl.store import layout, open_store  # noqa: E402
from runctl.store.snapshots import Snapshots  # noqa: E402
from runctl.testing.imds import ImdsEmulator  # noqa: E402

MIB = 1 << 20

SCRIPT = r'''
import json, os, random, signal, sys, time
from pathlib import Path
import runctl

comm = Path(os.environ["BENCH_COMM"])
size = int(sys.argv[1])
term = []
signal.signal(signal.SIGTERM, lambda *_: term.append(time.time()))
(comm / "ready").write_text("")
while not term:
    time.sleep(0.005)
marks = {"sigterm": term[0]}
if size:
    rng = random.Random(size)

    def write(temp):
        with open(temp, "wb") as f:
            left = size
            while left:
                n = min(left, 16 << 20)
                f.write(rng.randbytes(n))
                left -= n

    runctl.save_atomic(runctl.checkpoint_dir() / "ckpt.bin", write)
    marks["saved"] = time.time()
runctl.save_atomic(comm / "marks.json", json.dumps(marks))
'''


class Agent:
    """`python -m runctl run` in the background, its stderr lines stamped as they are read."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "runctl", "run", *argv], cwd=cwd, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[tuple[float, str]] = []
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._pump.join(5)

    def stamp(self, pattern: str) -> tuple[float, re.Match] | None:
        for when, line in self.lines:
            if (found := re.search(pattern, line)) is not None:
                return when, found
        return None

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def wait_for(path: Path, agent: Agent, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if agent.proc.poll() is not None or time.monotonic() > deadline:
            agent.wait(5)
            raise RuntimeError(f"no {path.name} (agent exit {agent.proc.returncode}):\n{agent.text}")
        time.sleep(0.005)


@contextlib.contextmanager
def store_for(kind: str, work: Path):
    """(store URL, extra environment for the agent) of a fresh store of ``kind``."""
    if kind == "local":
        folder = work / "store"
        shutil.rmtree(folder, ignore_errors=True)
        yield str(folder), {}
        shutil.rmtree(folder, ignore_errors=True)
        return
    import boto3

    aws = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    with moto_endpoint(in_process=False) as endpoint:
        aws["AWS_ENDPOINT_URL"] = endpoint
        os.environ.update(aws)  # for open_store in this process
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        yield "s3://bench/runs", aws


def one_run(imds: ImdsEmulator, work: Path, url: str, extra_env: dict, job_id: str, size: int, *,
            notice_in: float, deadline_in: float, timeout: float) -> dict:
    """One agent run with one notice; the moments that matter, as epochs."""
    comm = work / "comm"
    shutil.rmtree(comm, ignore_errors=True)
    comm.mkdir(parents=True)
    folder = work / "checkpoints" / job_id
    shutil.rmtree(folder, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    env.update(extra_env)
    env.update({"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint, "BENCH_COMM": str(comm),
                "XDG_CONFIG_HOME": str(work / "xdg")})
    imds.clear()
    agent = Agent(["s.py", "--spot-notices", "--job-id", job_id, "--store", url, "--checkpoint-dir", str(folder),
                   "--", str(size)], work, env)
    try:
        wait_for(comm / "ready", agent, 60)
        notice = imds.schedule_notice(notice_in, deadline_in=deadline_in)
        wait_for(comm / "marks.json", agent, timeout)
        code = agent.wait(timeout)
    finally:
        if agent.proc.poll() is None:
            agent.wait(0)
    marks = json.loads((comm / "marks.json").read_text())
    if code != 1:
        raise RuntimeError(f"agent exit code {code}, not 1 (interrupted):\n{agent.text}")
    result = {"visible": notice.visible_at, "served": imds.notice_first_served, "sigterm": marks["sigterm"],
              "saved": marks.get("saved"), "deadline": parse_imds_time(notice.time)}
    durable = agent.stamp(r"snapshot (\d+) durable")
    if durable is not None:
        result["durable"], seq = durable[0], int(durable[1][1])
        snaps = Snapshots(open_store(url), layout.checkpoints_prefix(job_id))
        info = snaps.get(seq)  # NotFoundError if its manifest is missing
        result["bytes"] = info.total_bytes
    shutil.rmtree(folder, ignore_errors=True)
    return result


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_rows(imds: ImdsEmulator, work: Path, kind: str, count: int, jitter: float) -> list[tuple]:
    total, polling, acting = [], [], []
    rng = random.Random(20261129)
    with store_for(kind, work) as (url, extra):
        for i in range(count):
            r = one_run(imds, work, url, extra, f"lat-{i}", 0, notice_in=1.0 + rng.uniform(0, jitter),
                        deadline_in=120, timeout=30)
            total.append(r["sigterm"] - r["visible"])
            polling.append(r["served"] - r["visible"])
            acting.append(r["sigterm"] - r["served"])
            print(f"  {kind} {i + 1}/{count}: {total[-1] * 1000:.0f} ms", file=sys.stderr)
    rows = []
    for name, values in ((f"notice visible -> SIGTERM ({kind} store)", total),
                         ("  visible -> first served (IMDS polling)", polling),
                         ("  first served -> SIGTERM (the agent)", acting)):
        rows.append((name, len(values), *(1000 * v for v in (statistics.median(values), percentile(values, 90),
                                                              percentile(values, 99), max(values)))))
    return rows


def durable_rows(imds: ImdsEmulator, work: Path, kind: str, sizes_mib: list[int], deadline_in: float) -> list[tuple]:
    rows = []
    with store_for(kind, work) as (url, extra):
        for size_mib in sizes_mib:
            r = one_run(imds, work, url, extra, f"dur-{size_mib}", size_mib * MIB, notice_in=1.0,
                        deadline_in=deadline_in, timeout=deadline_in + 60)
            assert r["bytes"] == size_mib * MIB, r
            rows.append((kind, size_mib, r["sigterm"] - r["visible"], r["saved"] - r["sigterm"],
                         r["durable"] - r["saved"], r["durable"] - r["visible"], r["deadline"] - r["durable"]))
            print(f"  {kind} {size_mib} MiB: durable {rows[-1][5]:.1f} s after the notice", file=sys.stderr)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50, help="notices for the latency figures (default 50)")
    parser.add_argument("--jitter", type=float, default=1.0,
                        help="notice at 1 s + uniform(0, JITTER) after ready (default 1; 0: the worst phase)")
    parser.add_argument("--latency-on", default="local", help="stores for the latency runs: local,s3 (default local)")
    parser.add_argument("--sizes-mib", default="100,1024", help="checkpoint sizes saved on SIGTERM (default 100,1024)")
    parser.add_argument("--stores", default="local,s3", help="stores for the durability runs (default local,s3)")
    parser.add_argument("--deadline", type=float, default=120.0, help="the notice's deadline, seconds (default 120)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "runctl-notice-bench")
    args = parser.parse_args()

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    (work / "xdg").mkdir(parents=True)
    (work / "s.py").write_text(SCRIPT)
    print(f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}", file=sys.stderr)
    latency, durable = [], []
    with ImdsEmulator() as imds:
        for kind in filter(None, args.latency_on.split(",")):
            if args.count > 0:
                latency += latency_rows(imds, work, kind, args.count, args.jitter)
        sizes = [int(s) for s in args.sizes_mib.split(",") if s]
        for kind in filter(None, args.stores.split(",")):
            if sizes:
                durable += durable_rows(imds, work, kind, sizes, args.deadline)

    if latency:
        print(f"\nNotice visible 1 s + uniform(0, {args.jitter:g}) s after the script is ready.\n")
        print("| latency | notices | median ms | p90 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, n, *ms in latency:
            print(f"| {name} | {n} | " + " | ".join(f"{v:.0f}" for v in ms) + " |")
    if durable:
        print(f"\nNotice deadline {args.deadline:g} s; the script saves the checkpoint on SIGTERM, then exits.\n")
        print("| store | checkpoint MiB | notice -> SIGTERM s | script's save s | save -> durable s "
              "| notice -> durable s | left before deadline s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for kind, size, *secs in durable:
            print(f"| {kind} | {size} | " + " | ".join(f"{v:.2f}" for v in secs) + " |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
