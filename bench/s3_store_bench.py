"""The checkpoint store on S3 (a moto server) beside the AWS CLI, in interleaved rounds.

    python bench/s3_store_bench.py --small-files 10000 [--small-kib 4] [--rounds 5]
    python bench/s3_store_bench.py --incremental [--size-mib 1024] [--files 8] [--rounds 5]

--small-files N: N files of --small-kib KiB in 100 folders, committed once; then each round
restores the snapshot into an empty folder beside `aws s3 cp --recursive` of the same
snapshot folder into another, in alternating order. Wall time and CPU time: this process's
for runctl (user + system, every thread), the CLI child's for the AWS CLI. moto runs in a
child process of its own, whose CPU neither side is charged with.

--incremental: --files files of --size-mib MiB in all. Each round, into a fresh prefix: a full
commit, one file changed and committed (bytes uploaded and copied counted through the
store), the same file changed back and committed (its content is in the first snapshot only:
nothing should be uploaded). Ratios of the one-changed commit to the full one.

Run by hand; not part of the test suite. The machine it ran on is shared and noisy: read the
ratios of a round, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_bench import MIB, fresh, make_data, make_small, moto_endpoint, spread, touch_one  # noqa: E402

PREFIX = "jobs/bench/checkpoints/"


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def aws_env(endpoint: str) -> dict:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
    return env


class Counting:
    """The S3 store's requests and bytes of one commit, from botocore's events."""

    def __init__(self, client) -> None:
        self.calls: dict[str, int] = {}
        self.sent = 0
        client.meta.events.register("before-call.s3.*", self._call)

    def _call(self, model, params, **_):
        self.calls[model.name] = self.calls.get(model.name, 0) + 1
        body = params.get("body")
        if model.name in ("PutObject", "UploadPart"):
            self.sent += int(params.get("headers", {}).get("Content-Length") or getattr(body, "__len__", lambda: 0)())

    def reset(self) -> None:
        self.calls, self.sent = {}, 0


def small_files_case(work: Path, count: int, kib: int, rounds: int, workers: int) -> None:
    import boto3

    from runctl.store.s3 import S3Store
    from runctl.store.snapshots import Snapshots

    source = work / f"small-{count}x{kib}k"
    make_small(source, count, kib)
    print(f"{count} files of {kib} KiB; {os.cpu_count()} CPUs; {rounds} rounds, workers={workers}", file=sys.stderr)
    with moto_endpoint(False) as endpoint:
        env = aws_env(endpoint)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        snaps = Snapshots(S3Store("bench", "runctl", endpoint_url=endpoint), PREFIX, workers=workers)
        start = time.perf_counter()
        snaps.commit(source)
        print(f"first commit: {time.perf_counter() - start:.2f} s", file=sys.stderr)
        aws = ["aws", "--endpoint-url", endpoint, "s3", "cp", "--recursive", "--only-show-errors",
               f"s3://bench/runctl/{PREFIX}00000001/"]
        print("| round | restore s | aws s3 cp s | ratio | restore CPU s | aws s3 cp CPU s | ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        wall, cpu = [], []
        for r in range(rounds):
            def ours() -> tuple[float, float]:
                target = fresh(work / "s3-restored")
                c0, t0 = cpu_self(), time.perf_counter()
                Snapshots(S3Store("bench", "runctl", endpoint_url=endpoint), PREFIX, workers=workers).restore(1, target)
                return time.perf_counter() - t0, cpu_self() - c0

            def theirs() -> tuple[float, float]:
                target = fresh(work / "s3-awscli")
                c0, t0 = cpu_children(), time.perf_counter()
                subprocess.run([*aws, str(target)], check=True, env=env)
                return time.perf_counter() - t0, cpu_children() - c0

            if r % 2:
                (aw, ac), (rw, rc) = theirs(), ours()
            else:
                (rw, rc), (aw, ac) = ours(), theirs()
            wall.append(rw / aw)
            cpu.append(rc / ac)
            print(f"| {r + 1} | {rw:.2f} | {aw:.2f} | {wall[-1]:.2f} | {rc:.2f} | {ac:.2f} | {cpu[-1]:.2f} |", flush=True)
        print(f"\nrestore / aws s3 cp, min / median / max over {rounds} rounds: wall {spread(wall)}; CPU {spread(cpu)}")
    for leftover in ("s3-restored", "s3-awscli"):
        shutil.rmtree(work / leftover, ignore_errors=True)


def incremental_case(work: Path, size_mib: int, files: int, rounds: int, workers: int) -> None:
    import boto3

    from runctl.store.s3 import S3Store
    from runctl.store.snapshots import Snapshots

    source = work / "source"
    total = make_data(source, size_mib, files)
    one = total // files
    print(f"{files} files x {one / MIB:.0f} MiB; {rounds} rounds, workers={workers}", file=sys.stderr)
    print("| round | full commit s | 1 changed s | ratio | MiB uploaded | ÷ changed file | requests | "
          "reverted s | MiB uploaded |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    ratios, sent_ratios = [], []
    with moto_endpoint(False) as endpoint:
        aws_env(endpoint)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        for r in range(rounds):
            store = S3Store("bench", f"round{r}", endpoint_url=endpoint)
            counting = Counting(store.client)
            snaps = Snapshots(store, PREFIX, workers=workers)
            t0 = time.perf_counter()
            snaps.commit(source)
            full = time.perf_counter() - t0
            touch_one(source)  # content no snapshot holds
            counting.reset()
            t0 = time.perf_counter()
            snaps.commit(source)
            changed = time.perf_counter() - t0
            changed_sent, calls = counting.sent, dict(counting.calls)
            touch_one(source)  # back to the first snapshot's content
            counting.reset()
            t0 = time.perf_counter()
            snaps.commit(source)
            reverted = time.perf_counter() - t0
            reverted_sent = counting.sent
            store.delete(o.key for o in store.list(""))
            ratios.append(changed / full)
            sent_ratios.append(changed_sent / one)
            shown = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
            print(f"| {r + 1} | {full:.2f} | {changed:.2f} | {ratios[-1]:.2f} | {changed_sent / MIB:.0f} | "
                  f"{sent_ratios[-1]:.2f} | {shown} | {reverted:.2f} | {reverted_sent / MIB:.0f} |", flush=True)
    print(f"\n1 changed ÷ full commit, min / median / max over {rounds} rounds: {spread(ratios)}; "
          f"bytes uploaded ÷ the changed file: {spread(sent_ratios)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "runctl-store-bench")
    parser.add_argument("--workers", type=int, default=8, help="Snapshots(workers=...) (default 8)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small-files", type=int, default=0, metavar="N")
    parser.add_argument("--small-kib", type=int, default=4)
    parser.add_argument("--incremental", action="store_true")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()
    if args.small_files:
        small_files_case(args.workdir, args.small_files, args.small_kib, args.rounds, args.workers)
    if args.incremental:
        incremental_case(args.workdir, args.size_mib, args.files, args.rounds, args.workers)
    if not (args.small_files or args.incremental):
        parser.error("give --small-files N or --incremental")
    return 0


if __name__ == "__main__":
    sys.exit(main())
