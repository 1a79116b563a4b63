"""Auto-resume end to end in the fake cloud, through the real CLI:

    runctl aws run training/train.py --auto-resume -- --steps N --checkpoint-every 500

with two spot interruptions served while the job runs: the job completes (exit 0) with the
straight run's weights, in three attempts on three instances, losing no step; each
replacement's launch is requested within 2 s of its notice. ``runctl aws cancel`` during a
recovery leaves nothing running. (The ``cloud`` fixture asserts nothing is left anyway.)
"""

from __future__ import annotations

import json

from runctl.agent.status import read_status
from runctl.resume.records import read_recoveries
from runctl.store import layout, open_store
from runctl.store.snapshots import Snapshots
from waiting import wait_for

STEPS = 6000
FAST_SYNC = {"RUNCTL_CHECKPOINT_SYNC_INTERVAL": "0.5"}


def job_store(cloud):
    return open_store(f"s3://{cloud.bucket}/runctl", session=cloud.session(), endpoint_url=cloud.endpoint)


def the_job(store) -> str | None:
    jobs = store.list_dirs("jobs/")
    return jobs[0] if jobs else None


def running_with_progress(store, job_id: str, attempt: int):
    """The attempt's instance once attempt ``attempt`` runs and a snapshot it made is durable."""
    status = read_status(store, job_id)
    if status is None or len(status.attempts) != attempt + 1 or status.state != "running":
        return None
    current = status.attempts[-1]
    latest = Snapshots(store, layout.checkpoints_prefix(job_id)).latest()
    if latest is None or latest.metadata.get("attempt") != attempt or current.ended is not None:
        return None
    return current.instance_id


def test_two_spot_interruptions_resume_on_new_instances(cloud, runctl_bg, straight_weights):
    proc = runctl_bg("aws", "run", "training/train.py", "--spot", "-t", "t3.micro", "--auto-resume",
                     "--", "--steps", str(STEPS), "--checkpoint-every", "500", **FAST_SYNC)
    store = job_store(cloud)
    job_id = wait_for("the job", lambda: the_job(store), proc)
    notices = []
    for attempt in range(2):
        instance_id = wait_for(f"attempt {attempt} to make progress",
                               lambda: running_with_progress(store, job_id, attempt), proc, timeout=90)
        notices.append(cloud.interrupt(instance_id))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err

    result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert result == {"final_step": STEPS, "weights_sha256": straight_weights(STEPS)}
    status = read_status(store, job_id)
    attempts = status.attempts
    assert status.state == "completed"
    assert [a.reason for a in attempts] == ["interrupted", "interrupted", "completed"]
    assert len({a.instance_id for a in attempts}) == 3
    assert [a.instance_id for a in attempts[:2]] == [n["instance_id"] for n in notices]
    for previous, following in zip(attempts, attempts[1:]):
        assert following.first_step == previous.last_step + 1, attempts  # no step lost: saved on SIGTERM
    assert attempts[-1].last_step == STEPS

    book, _ = read_recoveries(store, job_id)
    assert [r["old_instance"] for r in book["recoveries"]] == [n["instance_id"] for n in notices]
    assert [r["launched"] for r in book["recoveries"]] == [a.instance_id for a in attempts[1:]]
    for record, notice in zip(book["recoveries"], notices):
        assert record["launch_requested"] - notice["at"] < 2.0, (record, notice)
        assert record["launch_requested"] < notice["deadline"]  # overlapping the dying instance
    assert "2 recoveries" in err

    shown = json.loads(runctl_status(cloud, job_id))
    assert len(shown["attempts"]) == 3


def runctl_status(cloud, job_id: str) -> str:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_", "AWS_"))}
    env.update(cloud.env)
    done = subprocess.run([sys.executable, "-m", "runctl", "status", job_id, "--store",
                           f"s3://{cloud.bucket}/runctl", "--output", "json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = subprocess.run([sys.executable, "-m", "runctl", "status", job_id, "--store",
                           f"s3://{cloud.bucket}/runctl"], env=env, capture_output=True, text=True, timeout=60)
    assert "recoveries: 2" in text.stdout and "time lost" in text.stdout, text.stdout
    return done.stdout


def auto_resumed_run(cloud, runctl_bg, straight_weights, every: int, **env):
    """Start ``aws run training/train.py --auto-resume``; return once attempt 0 has made a
    durable snapshot: (store, job id, its instance, finish) where ``finish()`` waits for the
    job and checks it ended with the straight run's weights."""
    proc = runctl_bg("aws", "run", "training/train.py", "--spot", "-t", "t3.micro", "--auto-resume",
                     "--", "--steps", str(STEPS), "--checkpoint-every", str(every), **env, **FAST_SYNC)
    store = job_store(cloud)
    job_id = wait_for("the job", lambda: the_job(store), proc)
    instance_id = wait_for("progress", lambda: running_with_progress(store, job_id, 0), proc, timeout=90)

    def finish() -> None:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
        assert result == {"final_step": STEPS, "weights_sha256": straight_weights(STEPS)}

    return store, job_id, instance_id, finish


def test_a_script_that_does_not_save_on_the_signal_loses_at_most_its_checkpoint_interval(
        cloud, runctl_bg, straight_weights):
    # SIGUSR1 as the stop signal: train.py does not handle it and dies without saving, so
    # the next attempt resumes from the last periodic checkpoint.
    every = 500
    store, job_id, instance_id, finish = auto_resumed_run(cloud, runctl_bg, straight_weights, every,
                                                          RUNCTL_LOCAL_STOP_SIGNAL="SIGUSR1")
    cloud.interrupt(instance_id)
    finish()
    first, second = read_status(store, job_id).attempts
    assert first.reason == "interrupted" and first.exit_code < 0  # killed by the signal, nothing saved
    lost = first.last_step - (second.first_step - 1)
    assert 0 <= lost <= every, (first, second)


def test_an_instance_lost_without_a_notice_is_replaced_too(cloud, runctl_bg, straight_weights):
    # A hard loss: the instance is terminated with no spot notice (a crash, a hard stop). The
    # controller sees the instance gone and relaunches; the job resumes from its latest
    # periodic snapshot, losing at most the checkpoint interval.
    every = 500
    store, job_id, instance_id, finish = auto_resumed_run(cloud, runctl_bg, straight_weights, every)
    cloud.lose(instance_id)
    finish()
    attempts = read_status(store, job_id).attempts
    lost, resumed = attempts
    assert lost.instance_id == instance_id and resumed.instance_id != instance_id
    assert (lost.reason, resumed.reason) == ("lost", "completed")
    assert lost.ended is not None and lost.ended <= resumed.started
    # The lost attempt's last step is as its last heartbeat reported it; the new one resumed
    # from a snapshot taken at most one checkpoint interval before the loss.
    assert resumed.resumed_from is not None and resumed.first_step > 1
    assert resumed.first_step - 1 >= (lost.last_step or 0) - every - 1000, attempts
    book, _ = read_recoveries(store, job_id)
    assert book["recoveries"][0]["old_instance"] == instance_id


def test_cancel_during_a_recovery_leaves_nothing_running(cloud, runctl, runctl_bg):
    proc = runctl_bg("aws", "run", "training/train.py", "--spot", "-t", "t3.micro", "--auto-resume",
                     "--", "--steps", "20000", "--checkpoint-every", "500", **FAST_SYNC)
    store = job_store(cloud)
    job_id = wait_for("the job", lambda: the_job(store), proc)
    instance_id = wait_for("progress", lambda: running_with_progress(store, job_id, 0), proc, timeout=90)
    cloud.interrupt(instance_id)
    wait_for("the replacement", lambda: read_recoveries(store, job_id)[0]["current"] not in (None, instance_id),
             proc, timeout=30, interval=0.05)

    cancelled = runctl("aws", "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "cancelled" in err
    assert read_status(store, job_id).state in ("stopped", "interrupted")
    # The cloud fixture asserts that no instance, fleet or spot request is left.


def test_sigterm_to_aws_run_terminates_what_it_launched(cloud, runctl_bg):
    """A CI timeout or `timeout` sends SIGTERM: aws run cleans up as on Ctrl-C."""
    import signal

    proc = runctl_bg("aws", "run", "training/train.py", "--spot", "-t", "t3.micro", "--auto-resume",
                     "--", "--steps", "20000", "--checkpoint-every", "500", **FAST_SYNC)
    store = job_store(cloud)
    job_id = wait_for("the job", lambda: the_job(store), proc)
    wait_for("progress", lambda: running_with_progress(store, job_id, 0), proc, timeout=90)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "runctl: terminated i-" in err and "Traceback" not in err
    # The cloud fixture asserts that no instance, fleet or spot request is left.
