"""The recovery timeline of a spot interruption in the fake cloud, phase by phase.

    python bench/recovery_bench.py [--runs 3] [--notice-deadline 5] [--steps 8000]

Each run submits ``runctl aws run training/train.py --auto-resume --detach`` in a fresh fake
cloud (moto + IMDS emulator + an agent process per instance; the job runs in its own Auto
Scaling group) and times how long that command took to return. It waits until the job has a
durable snapshot, serves one spot notice to its instance, and records, in seconds from the
moment the notice was visible in the instance's metadata:

- notice recorded   the dying agent put the notice in status.json
- launch requested  the dying agent left the group keeping its capacity (the group launches
                    the replacement at once)
- agent started     the replacement's agent started (it recorded itself as the replacement)
- final snapshot    the dying attempt ended: its final snapshot durable, the attempt recorded
- lease taken       the replacement's agent holds the job's lease (lease.json polled every 20 ms)
- resumed           the script started on the replacement from the restored snapshot
- machine gone      the fake cloud terminated the old instance (the notice deadline)

Prints a markdown table (median and max over the runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("notice recorded", "launch requested", "agent started", "final snapshot", "lease taken", "resumed",
          "machine gone")


def one_run(workdir: Path, *, deadline_s: float, steps: int) -> dict[str, float]:
    from runctl.agent.status import read_status
    from runctl.agent.group_record import read_group, read_recovery_list
    from runctl.store import layout, open_store
    from runctl.store.snapshots import Snapshots
    from runctl.testing.cloud import FakeCloud

    project = workdir / "project"
    (project / "training").mkdir(parents=True)
    shutil.copy(REPO / "training" / "train.py", project / "training" / "train.py")
    with FakeCloud(workdir / "cloud", notice_deadline_s=deadline_s) as cloud:
        ami = cloud.client("ec2").describe_images()["Images"][0]["ImageId"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_", "AWS_"))}
        env.update(cloud.env, XDG_CONFIG_HOME=str(workdir / "xdg"), RUNCTL_AWS_AMI=ami,
                   RUNCTL_CHECKPOINT_SYNC_INTERVAL="0.5")
        submitted = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "runctl", "aws", "run", "training/train.py", "--spot",
                               "-t", "t3.micro", "--auto-resume", "--detach", "--job-id", "bench", "--",
                               "--steps", str(steps), "--checkpoint-every", "500"], cwd=project, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        detach_s = time.monotonic() - submitted
        if done.returncode != 0:
            raise RuntimeError(f"runctl aws run --detach failed ({done.returncode}):\n{done.stderr}")
        store = open_store(f"s3://{cloud.bucket}/runctl", session=cloud.session(), endpoint_url=cloud.endpoint)
        job_id = "bench"
        # Following the job: a command that exits with the job.
        proc = subprocess.Popen([sys.executable, "-m", "runctl", "aws", "watch", job_id], cwd=project, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            snapshots = Snapshots(store, layout.checkpoints_prefix(job_id))

            def progressing():
                status = read_status(store, job_id)
                latest = snapshots.latest()
                return (status is not None and status.state == "running" and status.attempts
                        and latest is not None and latest.metadata.get("attempt") == 0
                        and status.attempts[-1].instance_id)

            old = _wait(progressing, proc)
            first_holder = json.loads(store.read(layout.lease_key(job_id)).data)["holder"]
            notice = cloud.interrupt(old)
            lease_taken = None
            while proc.poll() is None and lease_taken is None:
                holder = json.loads(store.read(layout.lease_key(job_id)).data)
                if holder["holder"] != first_holder and not holder["released"]:
                    lease_taken = time.time()
                time.sleep(0.02)
            _, err = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"runctl aws watch failed ({proc.returncode}):\n{err}")
            if (read_group(store, job_id) or {}).get("ended", {}).get("state") != "completed":
                raise RuntimeError(f"the job did not complete: {read_group(store, job_id)}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        status = read_status(store, job_id)
        (record,) = read_recovery_list(store, job_id)
        gone = cloud.instances[old].notices[0]
        at = notice["at"]
        left = _wait_until_nothing_left(cloud)
        if left:
            raise RuntimeError(f"left running: {left}")
    return {
        "detach returned": detach_s,
        "notice recorded": (status.attempts[0].interruption or {}).get("received", float("nan")) - at,
        "launch requested": record["launch_requested"] - at,
        "agent started": record["agent_started"] - at,
        "final snapshot": status.attempts[0].ended - at,
        "lease taken": (lease_taken or float("nan")) - at,
        "resumed": status.attempts[1].started - at,
        "machine gone": gone - at,
    }


def _wait_until_nothing_left(cloud, timeout: float = 30.0) -> list[str]:
    """The agents shut their machines down a moment after the job's last record."""
    deadline = time.monotonic() + timeout
    while (left := cloud.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _wait(predicate, proc, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise RuntimeError(f"runctl exited ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)
    raise TimeoutError("the job made no progress")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--notice-deadline", type=float, default=5.0, help="seconds from notice to termination")
    parser.add_argument("--steps", type=int, default=8000)
    args = parser.parse_args(argv)
    runs = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="runctl-recovery-bench-") as folder:
            runs.append(one_run(Path(folder), deadline_s=args.notice_deadline, steps=args.steps))
        print(f"run {n + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in runs[-1].items()), file=sys.stderr,
              flush=True)
    print(f"Recovery timeline in the fake cloud: {args.runs} run(s), notice deadline {args.notice_deadline:g} s, "
          f"seconds from the spot notice (visible in IMDS)\n")
    detach = [r["detach returned"] for r in runs]
    print(f"`aws run --detach` returned after {statistics.median(detach):.2f} s (median; min {min(detach):.2f}, "
          f"max {max(detach):.2f})\n")
    print("| phase | median (s) | max (s) |")
    print("|---|---:|---:|")
    print("| notice visible | 0.00 | 0.00 |")
    for phase in PHASES:
        values = [r[phase] for r in runs]
        print(f"| {phase} | {statistics.median(values):.2f} | {max(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
