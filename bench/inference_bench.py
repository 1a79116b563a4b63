"""The inference server example: request latency, throughput, and the cost of a reload.

    python bench/inference_bench.py [--requests 2000] [--threads 4]

Trains train.py's model briefly under `runctl run` (a local store in a temporary folder),
starts training/examples/inference_server.py on it, then measures with real HTTP requests:
/predict latency (one vector; a batch of 64) one request at a time, throughput with
--threads clients, /reload time when a newer snapshot exists, and the latency of requests
answered while a reload runs. Prints markdown. Run by hand; needs fastapi and uvicorn.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VECTOR = [0.1 * i for i in range(16)]


def call(port: int, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {path}: HTTP {exc.code}: {exc.read().decode()[:500]}") from None


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return f"{statistics.median(ms):.2f} / {p(0.9):.2f} / {p(0.99):.2f} ms"


def runctl(folder: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "runctl", *args], cwd=folder, check=True, capture_output=True, timeout=600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="runctl-inference-bench-"))
    shutil.copytree(REPO / "training", folder / "training")
    runctl(folder, "run", "training/train.py", "--job-id", "bench", "--", "--steps", "500", "--checkpoint-every", "250")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (folder / "server.log").open("wb")  # uvicorn logs every request: a pipe would fill up
    server = subprocess.Popen([sys.executable, "training/examples/inference_server.py", "--job", "bench",
                               "--port", str(port)], cwd=folder, env=env, stdout=log, stderr=log)
    try:
        started = time.perf_counter()
        while True:
            try:
                call(port, "GET", "/health")
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"the server exited: {(folder / 'server.log').read_text()[-2000:]}")
                time.sleep(0.05)
        ready = time.perf_counter() - started

        one = [timed(lambda: call(port, "POST", "/predict", {"inputs": VECTOR})) for _ in range(args.requests)]
        batch = [timed(lambda: call(port, "POST", "/predict", {"inputs": [VECTOR] * 64}))
                 for _ in range(args.requests // 10)]

        per_thread = args.requests // args.threads

        def client() -> None:
            for _ in range(per_thread):
                call(port, "POST", "/predict", {"inputs": VECTOR})

        threads = [threading.Thread(target=client) for _ in range(args.threads)]
        wall = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        throughput = per_thread * args.threads / (time.perf_counter() - wall)

        runctl(folder, "run", "training/train.py", "--job-id", "bench-next", "--", "--steps", "500")
        # A newer snapshot of the served job: the next job's checkpoint committed as "bench".
        from runctl.store.local import LocalStore
        from runctl.store.snapshots import Snapshots

        store = LocalStore(folder / ".runctl" / "store")
        newer = folder / "newer"
        Snapshots(store, "jobs/bench-next/checkpoints/").restore(
            Snapshots(store, "jobs/bench-next/checkpoints/").latest(), newer)
        Snapshots(store, "jobs/bench/checkpoints/").commit(newer)
        during: list[float] = []
        stop = threading.Event()

        def asker() -> None:
            while not stop.is_set():
                during.append(timed(lambda: call(port, "POST", "/predict", {"inputs": VECTOR})))

        thread = threading.Thread(target=asker)
        thread.start()
        time.sleep(0.2)
        reload_s = timed(lambda: call(port, "POST", "/reload"))
        stop.set()
        thread.join()
        unchanged_s = timed(lambda: call(port, "POST", "/reload"))
    except BaseException:
        print((folder / "server.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)

    print(f"| measure ({os.cpu_count()} cores) | value |\n| --- | --- |")
    print(f"| start to first /health | {ready:.2f} s |")
    print(f"| /predict, one vector, median / p90 / p99 | {percentiles(one)} |")
    print(f"| /predict, 64 vectors, median / p90 / p99 | {percentiles(batch)} |")
    print(f"| /predict throughput, {args.threads} clients | {throughput:.0f} requests/s |")
    print(f"| /reload with a newer snapshot | {reload_s * 1000:.0f} ms |")
    print(f"| /reload with nothing newer | {unchanged_s * 1000:.1f} ms |")
    print(f"| /predict during the reload ({len(during)} requests), median / p90 / p99 | {percentiles(during)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
