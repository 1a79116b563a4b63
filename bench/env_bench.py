"""A replacement instance's boot to training resumed, with the job's environment cold vs
cached, in the fake cloud, for an environment that holds torch (CPU build) and numpy.

    UV_FIND_LINKS=... UV_INDEX_URL=... python bench/env_bench.py [--runs 1] [--requirement ...]

uv on the instances must find torch and numpy where this machine keeps them: give its
index settings in the environment (UV_INDEX_URL, UV_EXTRA_INDEX_URL, UV_FIND_LINKS,
UV_OFFLINE ...); every instance's agent inherits them. Each instance has a uv cache of
its own (under its runctl home), empty at boot, as a new EC2 instance's is: a UV_CACHE_DIR
in this environment is dropped, so that no instance finds a warm one.

Each run submits ``runctl aws run`` of a small torch script (``--detach``) whose project
has a requirements.txt, then serves two spot notices:

1. cold: once attempt 0 runs (it built the environment and cached it), the cached
   environment is deleted from the bucket and the notice served: the replacement builds it
   again (uv: resolve, fetch, unpack), starts the script, and caches it meanwhile;
2. cached: once attempt 1 runs and its upload is in the bucket, the second notice: the
   replacement unpacks it as it downloads.

For each replacement, in seconds from its agent's start: the environment ready (what the
attempt's record says it took), the script started, and training resumed (the script's
first line after importing torch and numpy and loading its checkpoint). Prints a markdown
table (min / median / max over the runs, cold and cached interleaved in each run), the
environment's size and the machine's load average during the runs.
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
import time
from pathlib import Path

SCRIPT = '''\
import json, signal, sys, time
import numpy as np
import torch
import runctl

stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
model = torch.nn.Linear(64, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
start = 0
resume = runctl.resume_from()
if resume is not None:
    state = torch.load(resume)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start = state["step"] + 1
print(json.dumps({"training_resumed": time.time(), "step": start}), flush=True)
rng = np.random.default_rng(start)
for step in range(start, int(sys.argv[1])):
    x = torch.from_numpy(rng.standard_normal((32, 64), dtype=np.float32))
    loss = model(x).pow(2).mean()
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    runctl.progress(step)
    time.sleep(0.01)
    if step % 100 == 0 or stop:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
        runctl.save_atomic(runctl.checkpoint_dir() / "state.pt", lambda tmp: torch.save(state, tmp), step=step)
    if stop:
        sys.exit(0)
print(json.dumps({"final_step": step}))
'''
SECONDS = re.compile(r"in ([0-9.]+)s")


def one_run(workdir: Path, *, requirements: str, deadline_s: float) -> dict[str, dict[str, float]]:
    from runctl.agent.group_record import read_group, read_recovery_list
    from runctl.agent.status import read_status
    from runctl.store import open_store
    from runctl.testing.cloud import FakeCloud

    project = workdir / "project"
    project.mkdir(parents=True)
    (project / "requirements.txt").write_text(requirements.replace(",", "\n") + "\n")
    (project / "train_torch.py").write_text(SCRIPT)
    with FakeCloud(workdir / "cloud", notice_deadline_s=deadline_s) as cloud:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_", "AWS_"))}
        env.update(cloud.env, XDG_CONFIG_HOME=str(workdir / "xdg"), RUNCTL_CHECKPOINT_SYNC_INTERVAL="0.5")
        done = subprocess.run([sys.executable, "-m", "runctl", "aws", "run", "train_torch.py", "--spot", "-t",
                               "t3.micro", "--auto-resume", "--no-docker", "--detach", "--job-id", "bench", "--",
                               "1000000"], cwd=project, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"runctl aws run --detach failed ({done.returncode}):\n{done.stderr}")
        store = open_store(f"s3://{cloud.bucket}/runctl", session=cloud.session(), endpoint_url=cloud.endpoint)
        try:
            first = _wait(lambda: _resumed(store, 0), timeout=900)
            _wait(lambda: _cached(store), timeout=900)  # attempt 0's upload runs beside its script
            for obj in list(store.list("envs/")):  # the next replacement finds no cached environment
                store.delete([obj.key])
            cloud.interrupt(first)
            second = _wait(lambda: _resumed(store, 1), timeout=900)
            _wait(lambda: _cached(store), timeout=900)
            size = sum(o.size for o in store.list("envs/") if o.key.endswith(".tar.gz"))
            cloud.interrupt(second)
            _wait(lambda: _resumed(store, 2), timeout=900)
        finally:
            subprocess.run([sys.executable, "-m", "runctl", "aws", "cancel", "bench"], cwd=project, env=env,
                           capture_output=True)
            _wait(lambda: (read_group(store, "bench") or {}).get("ended"), timeout=120)
        status = read_status(store, "bench")
        records = read_recovery_list(store, "bench")
        timings = {"size": {"archive MB": size / 1e6}}
        for name, attempt, record in (("cold", status.attempts[1], records[0]),
                                      ("cached", status.attempts[2], records[1])):
            booted, resumed = record["agent_started"], _resumed_at(store, attempt.number)
            timings[name] = {"environment ready": float(SECONDS.search(attempt.environment or "").group(1)),
                             "script started": attempt.started - booted, "training resumed": resumed - booted,
                             "notice to training resumed": resumed - record["notice_seen"]}
            print(f"attempt {attempt.number}: {attempt.environment}", file=sys.stderr, flush=True)
    return timings


def _log(store, attempt: int) -> str:
    from runctl.agent.logs import log_chunks

    return "".join(store.read(key).data.decode(errors="replace") for key in log_chunks(store, "bench", attempt))


def _resumed_at(store, attempt: int) -> float | None:
    for line in _log(store, attempt).splitlines():
        if line.startswith('{"training_resumed"'):
            return json.loads(line)["training_resumed"]
    return None


def _resumed(store, attempt: int):
    """The instance of attempt ``attempt`` once its script resumed training and a snapshot is durable."""
    from runctl.agent.status import read_status

    status = read_status(store, "bench")
    if status is None or len(status.attempts) != attempt + 1 or _resumed_at(store, attempt) is None:
        return None
    if not list(store.list("jobs/bench/checkpoints/")):
        return None
    return status.attempts[-1].instance_id


def _cached(store) -> bool:
    """The environment's archive and its record, written last, are in the bucket."""
    return any(o.key.endswith(".json") for o in store.list("envs/"))


def _wait(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"waited {timeout:.0f}s in vain")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--notice-deadline", type=float, default=6.0, help="seconds from notice to termination")
    parser.add_argument("--requirements", default="torch==2.13.0+cpu,numpy",
                        help="the project's requirements.txt, comma-separated")
    args = parser.parse_args(argv)
    os.environ.pop("UV_CACHE_DIR", None)  # every instance starts with an empty uv cache of its own
    runs, loads = [], [os.getloadavg()[0]]
    for n in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="runctl-env-bench-") as folder:
            runs.append(one_run(Path(folder), requirements=args.requirements, deadline_s=args.notice_deadline))
        loads.append(os.getloadavg()[0])
        print(f"run {n + 1}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    print(f"environment: {args.requirements}; archive {statistics.median(r['size']['archive MB'] for r in runs):.0f} MB"
          f" (gzip -1); {args.runs} run(s), seconds from the replacement agent's start, min / median / max; "
          f"1-minute load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores\n")
    phases = list(runs[0]["cold"])
    print("| phase | cold | cached | cold / cached (medians) |\n|---|---:|---:|---:|")
    for phase in phases:
        cold = [r["cold"][phase] for r in runs]
        cached = [r["cached"][phase] for r in runs]
        print(f"| {phase} | {_spread(cold)} | {_spread(cached)} | "
              f"{statistics.median(cold) / statistics.median(cached):.1f}x |")
    return 0


def _spread(values: list[float]) -> str:
    return " / ".join(f"{v:.1f}" for v in (min(values), statistics.median(values), max(values)))


if __name__ == "__main__":
    sys.exit(main())
