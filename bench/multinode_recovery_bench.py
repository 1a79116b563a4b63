"""The recovery timeline of a two-machine job after a spot notice, in the fake cloud.

    python bench/multinode_recovery_bench.py [--runs 3] [--notice-on member|host] [--notice-deadline 30]

Each run starts a fresh fake cloud (moto + an IMDS emulator and an agent process per
instance; the instances' image has torch and numpy) and submits, as
tests/acceptance/test_multinode_notice.py does,

    runctl aws run training/train_ddp.py --spot --nodes 2 --auto-resume -- --steps 2500 ...

waits for a snapshot of both machines, and serves one spot notice to the machine that is not
the rendezvous host (``--notice-on host``: to the host). Every moment is read from what the
system records, in seconds from the notice becoming visible in the instance's metadata:

- notice seen               the noticed agent's reading of it (recoveries.json: notice_seen)
- all ranks stopped         the last torchrun of the stopped epoch exited (the two machines', and
                            a replacement's that joined it; their agent logs: "this machine's
                            torchrun ended" / "its process tree exited")
- final snapshot durable    the committed round's manifest (its ``created``), the snapshot
                            status.json names as the interrupted attempt's final one
- replacement requested     the noticed agent left the group (recoveries.json: launch_requested)
- replacement booted        the replacement's agent started (recoveries.json: agent_started)
- rendezvous complete       every machine of the new epoch started its torchrun (the host:
                            status.json's next attempt started; a member: its agent log's
                            "this machine's torchrun started (epoch N)")
- training resumed          the next attempt's first step, as the script reported it (the
                            new host's agent log: "progress-1.json: first step N reported at T")

Every run must end with the weights of a straight two-process run (computed once, without
runctl), with the attempts ["interrupted", "completed"] and nothing left running; a run that
does not raises, so the bench cannot report a broken recovery. Prints a markdown table
(min / median / max over the runs). Run by hand, with this checkout's runctl importable
(PYTHONPATH=src); not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "examples" / "train_ddp.py"
ARGS = ("--steps", "2500", "--checkpoint-every", "250")  # the acceptance test's job
JOB = "wide"
PHASES = ("notice seen", "all ranks stopped", "final snapshot durable", "replacement requested",
          "replacement booted", "rendezvous complete", "training resumed")
STOPPED = re.compile(r"this machine's torchrun ended|attempt \d+: its process tree exited")


def straight_result(folder: Path) -> dict:
    """The job's result without runctl: torchrun, two processes on one machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(SCRIPT), *ARGS], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the straight run failed ({done.returncode}):\n{done.stderr}")
    return last_json(done.stdout)


def last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def agent_log(cloud, instance_id: str) -> list[tuple[float, str]]:
    """An instance's agent log as (epoch time, message) lines (its stamps are local time, ms)."""
    lines = []
    for line in (cloud.workdir / "instances" / instance_id / "agent.log").read_text().splitlines():
        stamp = line[:23]
        try:
            lines.append((datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp(), line[24:]))
        except ValueError:  # a continuation line (a traceback's)
            continue
    return lines


def find_line(cloud, instance_id: str, pattern: str | re.Pattern, after: float) -> tuple[float, re.Match] | None:
    """The first line of an instance's agent log at or after ``after`` matching ``pattern``."""
    for when, text in agent_log(cloud, instance_id):
        if when >= after and (found := re.search(pattern, text)):
            return when, found
    return None


def first_line(cloud, instance_id: str, pattern: str | re.Pattern, after: float) -> tuple[float, re.Match]:
    found = find_line(cloud, instance_id, pattern, after)
    if found is None:
        raise RuntimeError(f"no line matching {pattern!r} in the agent log of {instance_id} after the notice")
    return found


def one_run(workdir: Path, *, on_host: bool, deadline_s: float, straight: dict) -> dict[str, float]:
    from runctl.agent.group_record import read_recovery_list
    from runctl.agent.rendezvous import read_rendezvous
    from runctl.agent.status import read_status
    from runctl.store import layout, open_store
    from runctl.store.snapshots import Snapshots
    from runctl.testing.cloud import FakeCloud

    project = workdir / "project"
    (project / "training").mkdir(parents=True)
    shutil.copy(SCRIPT, project / "training" / "train_ddp.py")
    with FakeCloud(workdir / "cloud", notice_deadline_s=deadline_s, image_packages=("torch", "numpy")) as cloud:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_", "AWS_"))}
        env.update(cloud.env, XDG_CONFIG_HOME=str(workdir / "xdg"), RUNCTL_AWS_AMI=cloud.image_id,
                   RUNCTL_CHECKPOINT_SYNC_INTERVAL="0.5")
        # The submitter follows the job to its end and prints the script's result.
        proc = subprocess.Popen([sys.executable, "-m", "runctl", "aws", "run", "training/train_ddp.py", "--spot",
                                 "-t", "t3.micro", "--nodes", "2", "--auto-resume", "--job-id", JOB, "--", *ARGS,
                                 "--slow", "0.01"], cwd=project, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            store = open_store(f"s3://{cloud.bucket}/runctl", session=cloud.session(), endpoint_url=cloud.endpoint)
            snapshots = Snapshots(store, layout.checkpoints_prefix(JOB))
            _wait(snapshots.latest, proc, timeout=300)  # a snapshot is a round: a part of each machine
            host = read_rendezvous(store, JOB)[0].instance_id
            (member,) = [i for i in cloud.instances if i != host]
            noticed = host if on_host else member
            notice = cloud.interrupt(noticed)
            # The final snapshot's manifest, read once status.json names it: older snapshots are pruned.
            final = _wait(lambda: _final_snapshot(store, snapshots), proc, timeout=300)
            out, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"runctl aws run failed ({proc.returncode}):\n{err}")
        result = last_json(out)
        if result != straight or result.get("world_size") != 2:
            raise RuntimeError(f"the recovered job ended with {result}, a straight run with {straight}")
        status = read_status(store, JOB)
        if [a.reason for a in status.attempts] != ["interrupted", "completed"]:
            raise RuntimeError(f"not one interruption and one completion: {status.attempts}")
        first, second = status.attempts
        if not first.final_snapshot == final.seq == second.resumed_from:
            raise RuntimeError(f"the next attempt did not resume from the final snapshot {final.seq}: "
                               f"{status.attempts}")
        records = read_recovery_list(store, JOB)
        if len(records) != 1 or records[0]["old_instance"] != noticed:
            raise RuntimeError(f"not one recovery of {noticed}: {records}")
        record = records[0]
        epoch = read_rendezvous(store, JOB)[0].epoch
        at = notice["at"]
        # The stopped epoch's machines: the two, and a replacement that booted before the stop and
        # joined that epoch (it stops with it, then joins the next).
        ran_stopped = rf"this machine's torchrun started \(epoch {epoch - 1}\)"
        stopped = [first_line(cloud, i, STOPPED, at)[0] for i in cloud.instances
                   if i in (host, member) or find_line(cloud, i, ran_stopped, 0.0) is not None]
        # The machines of the new epoch besides its host: the replacement, or the survivor. (An
        # instance the group launches as the job ends, before its group is deleted, runs nothing.)
        joined = rf"this machine's torchrun started \(epoch {epoch}\)"
        started = {i: line[0] for i in cloud.instances if i not in (noticed, second.instance_id)
                   if (line := find_line(cloud, i, joined, at)) is not None}
        if len(started) != 1:
            raise RuntimeError(f"epoch {epoch} ran on {second.instance_id} and {sorted(started)}, not on two machines")
        _, found = first_line(cloud, second.instance_id, r"progress-1\.json: first step (\d+) reported at ([\d.]+)",
                                 at)
        if int(found[1]) != second.first_step:
            raise RuntimeError(f"first step {found[1]} logged, {second.first_step} recorded")
        left = _wait_until_nothing_left(cloud)
        if left:
            raise RuntimeError(f"left running: {left}")
    return {
        "notice seen": record["notice_seen"] - at,
        "all ranks stopped": max(stopped) - at,
        "final snapshot durable": _epoch(final.created) - at,
        "replacement requested": record["launch_requested"] - at,
        "replacement booted": record["agent_started"] - at,
        "rendezvous complete": max(second.started, *started.values()) - at,
        "training resumed": float(found[2]) - at,
    }


def _final_snapshot(store, snapshots):
    from runctl.agent.status import read_status

    status = read_status(store, JOB)
    if status is None or not status.attempts or status.attempts[0].reason is None:
        return None
    seq = status.attempts[0].final_snapshot
    return snapshots.get(seq) if seq is not None else None


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _wait(probe, proc, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if proc.poll() is not None:
            raise RuntimeError(f"runctl exited ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.2)
    raise TimeoutError(f"{getattr(probe, '__name__', 'the probe')}: nothing within {timeout:.0f}s")


def _wait_until_nothing_left(cloud, timeout: float = 30.0) -> list[str]:
    """The agents shut their machines down a moment after the job's last record."""
    deadline = time.monotonic() + timeout
    while (left := cloud.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--notice-on", choices=("member", "host"), default="member",
                        help="the machine that gets the notice: the one that is not the rendezvous host, or the host")
    parser.add_argument("--notice-deadline", type=float, default=30.0, help="seconds from notice to termination")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="runctl-mn-straight-") as folder:
        straight = straight_result(Path(folder))
    runs = []
    for n in range(args.runs):
        folder = Path(tempfile.mkdtemp(prefix="runctl-mn-recovery-bench-"))
        try:
            runs.append(one_run(folder, on_host=args.notice_on == "host", deadline_s=args.notice_deadline,
                                straight=straight))
        except BaseException:
            print(f"run {n + 1} failed; its fake cloud (agent logs) is kept in {folder}", file=sys.stderr)
            raise
        shutil.rmtree(folder, ignore_errors=True)
        print(f"run {n + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in runs[-1].items()), file=sys.stderr,
              flush=True)
    print(f"Two-machine recovery in the fake cloud, notice on the {args.notice_on}: {args.runs} run(s), "
          f"notice deadline {args.notice_deadline:g} s, seconds from the spot notice (visible in IMDS)\n")
    print("| phase | min (s) | median (s) | max (s) |")
    print("| --- | --: | --: | --: |")
    for phase in PHASES:
        values = [r[phase] for r in runs]
        print(f"| {phase} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
