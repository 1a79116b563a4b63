"""Durability lag: how long after a script rewrites its checkpoint is that checkpoint durable?

    python bench/durability_bench.py [--size-mib 100] [--period 5] [--rewrites 18] [--rounds 3]
                                     [--before-src PATH] [--no-s3] [--no-local]

A script under `runctl -v run` rewrites checkpoints/last.pt (--size-mib, its step in the
first bytes, written in place as `torch.save(state, "checkpoints/last.pt")` would) every
--period seconds, --rewrites times, calling runctl.progress(step) before each save, and
logs when each version was in place and its sha256. The agent's "snapshot N durable" lines
are time-stamped as they arrive on its stderr; the bench reads snapshot N's manifest right
then to learn which version of last.pt it holds. The lag of a version is the time from the
moment it was in place to the moment a snapshot holding it, or a newer version, was
durable: what an interruption without notice would lose, in seconds of training.

Stores: a local folder, and S3 on a moto server (ThreadedMotoServer on 127.0.0.1, a free
port, in a child process as in bench/store_bench.py). With --before-src (the src folder of
another checkout, e.g. a `git worktree` of main), the same runs are made with that code,
interleaved with this one's (before, after, before, after ...), so that both see the same
machine load. Prints markdown tables. Run by hand; not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE))

WRITER = '''\
import hashlib, json, os, sys, time
import runctl

period, count, size, log = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
folder = runctl.checkpoint_dir()
body = os.urandom(size - 64)
start = time.time()
with open(log, "a") as out:
    for k in range(1, count + 1):
        time.sleep(max(0.0, start + k * period - time.time()))
        step = 100 * k
        data = f"step {step}".encode().ljust(64) + body
        digest = hashlib.sha256(data).hexdigest()
        runctl.progress(step=step)
        with open(folder / "last.pt", "wb") as f:  # in place, as torch.save(state, path) does
            f.write(data)
        out.write(json.dumps({"step": step, "written": time.time(), "sha256": digest}) + "\\n")
        out.flush()
    time.sleep(period)  # a last period of training: the last version must not wait for the exit
'''

DURABLE = re.compile(r"snapshot (\d+) durable \((\d+) files?, (\d+) bytes, ([\d.]+)s\)")


def run_once(src: Path, store_url: str, env: dict, work: Path, args, label: str) -> dict:
    """One `runctl run` of the writer; returns per-version lags and upload figures."""
    from runctl.store import layout, open_store
    from runctl.store.snapshots import Snapshots

    job = f"lag-{label.replace(' ', '-')}-{time.time_ns()}"
    run_dir = work / job
    run_dir.mkdir(parents=True)
    (run_dir / "writer.py").write_text(WRITER)
    log = run_dir / "versions.jsonl"
    snapshots = Snapshots(open_store(store_url), layout.checkpoints_prefix(job))
    held: dict[int, tuple[float, str | None, float]] = {}  # seq -> (durable at, sha256 of last.pt, seconds)
    started = time.time()

    def watch(stream) -> None:
        for line in stream:
            tail[:] = [*tail[-5:], line]
            if "warning" in line:
                warnings.append(f"{time.time() - started:.1f}s {line.strip()}")
            found = DURABLE.search(line)
            if not found:
                continue
            now = time.time()
            seq = int(found.group(1))
            try:
                entry = next((f for f in snapshots.get(seq).files if f.path == "last.pt"), None)
            except Exception as exc:  # pruned already: should not happen with keep_last_n 5
                print(f"  could not read snapshot {seq}: {exc}", file=sys.stderr)
                entry = None
            held[seq] = (now, entry.sha256 if entry else None, float(found.group(4)))

    size = args.size_mib << 20
    command = [sys.executable, "-m", "runctl", "-v", "run", "--store", store_url, "--job-id", job,
               "--checkpoint-dir", "checkpoints", "writer.py", "--",
               str(args.period), str(args.rewrites), str(size), str(log)]
    proc = subprocess.Popen(command, cwd=run_dir, env={**env, "PYTHONPATH": str(src)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tail: list[str] = []
    warnings: list[str] = []
    reader = threading.Thread(target=watch, args=(proc.stderr,))
    reader.start()
    code = proc.wait()
    reader.join()
    elapsed = time.time() - started
    if code != 0:
        raise SystemExit(f"{label}: runctl run exited {code}:\n{''.join(tail)}")
    versions = [json.loads(line) for line in log.read_text().splitlines()]
    index = {v["sha256"]: i for i, v in enumerate(versions)}
    durable = sorted((at, index.get(sha, -1)) for at, sha, _s in held.values())
    lags = []
    for i, version in enumerate(versions):
        # The first snapshot, in time, that holds this version or a newer one.
        at = next((t for t, j in durable if j >= i), None)
        lags.append(at - version["written"] if at is not None else float("nan"))
    uploads = sum(1 for _t, sha, _s in held.values() if sha in index)
    upload_s = sum(s for _t, _sha, s in held.values())
    for path in sorted(run_dir.rglob("*"), reverse=True):  # 100 MB files: do not keep them
        path.unlink() if path.is_file() else path.rmdir()
    durations = [s for _t, _sha, s in held.values()]
    for line in warnings:  # a failed snapshot (e.g. the file changed while being uploaded) is retried
        print(f"  {label}: {line}", file=sys.stderr)
    return {"lags": lags, "uploads": uploads, "versions": len(versions), "upload_s": upload_s, "elapsed": elapsed,
            "durations": durations, "warnings": len(warnings)}


def summary(values: list[float]) -> str:
    values = sorted(v for v in values if v == v)
    if not values:
        return "n/a"
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    return (f"{values[0]:.1f} / {statistics.median(values):.1f} / {p90:.1f} / {values[-1]:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--period", type=float, default=5.0, help="seconds between two rewrites of last.pt")
    parser.add_argument("--rewrites", type=int, default=18)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before-src", type=Path, help="src folder of the code to compare with (e.g. main)")
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--no-local", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="runctl-lag-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    env.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "XDG_CONFIG_HOME": str(work / "xdg")})
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                           "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")})
    codes = [("before", args.before_src.resolve())] if args.before_src else []
    codes.append(("after", SRC))
    results: dict[tuple[str, str], list[dict]] = {}

    def rounds(store_name: str, store_url: str, run_env: dict) -> None:
        for n in range(args.rounds):
            for code, src in (codes if n % 2 == 0 else codes[::-1]):  # alternate which goes first
                result = run_once(src, store_url, run_env, work, args, f"{code}-{store_name}")
                results.setdefault((store_name, code), []).append(result)
                print(f"  round {n + 1}, {store_name}, {code}: median lag "
                      f"{statistics.median(x for x in result['lags'] if x == x):.1f} s, "
                      f"{result['uploads']} of {result['versions']} versions uploaded, snapshots took "
                      f"{' '.join(f'{d:.1f}' for d in result['durations'])} s", file=sys.stderr, flush=True)

    if not args.no_local:
        rounds("local", str(work / "store"), env)
    if not args.no_s3:
        import boto3
        from store_bench import moto_endpoint

        with moto_endpoint(in_process=False) as endpoint:
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
            os.environ["AWS_ENDPOINT_URL"] = endpoint  # for this process's reads of the manifests
            rounds("moto S3", "s3://bench/runctl", {**env, "AWS_ENDPOINT_URL": endpoint})

    print(f"\n{args.size_mib} MiB last.pt rewritten every {args.period:g} s, {args.rewrites} times a run, "
          f"{args.rounds} runs per row, interleaved\n")
    print("| store | code | lag min / median / p90 / max (s) | versions uploaded | time spent uploading "
          "| one snapshot, median / max (s) |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for (store_name, code), runs in results.items():
        lags = [lag for r in runs for lag in r["lags"]]
        uploaded = sum(r["uploads"] for r in runs)
        versions = sum(r["versions"] for r in runs)
        share = sum(r["upload_s"] for r in runs) / sum(r["elapsed"] for r in runs)
        durations = [d for r in runs for d in r["durations"]]
        print(f"| {store_name} | {code} | {summary(lags)} | {uploaded} of {versions} | {100 * share:.0f}% "
              f"| {statistics.median(durations):.2f} / {max(durations):.2f} |")
    if args.before_src:
        print("\n| store | median lag, before / after, per round: min / median / max |")
        print("| --- | --- |")
        for store_name in dict.fromkeys(s for s, _c in results):
            ratios = [statistics.median(x for x in b["lags"] if x == x) / statistics.median(x for x in a["lags"] if x == x)
                      for b, a in zip(results[(store_name, "before")], results[(store_name, "after")])]
            print(f"| {store_name} | {min(ratios):.1f}x / {statistics.median(ratios):.1f}x / {max(ratios):.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
