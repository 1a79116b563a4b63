"""Auto-resume end to end in the fake cloud, through the real CLI:

    runctl aws run training/train.py --auto-resume -- --steps N --checkpoint-every 500

The job runs in an Auto Scaling group of its own; its agents resume it on spot notices (the
dying instance detaches itself, so the group launches the replacement at once) and after a
machine lost without a notice (the group replaces it), and end the group when the job ends.
Nothing of it depends on the submitting process: it is SIGKILLed in the main test. The
``cloud`` fixture asserts that no group, launch template, instance or spot request is left.
"""

from __future__ import annotations

import json
import signal

from runctl.agent.group_record import read_group, read_recovery_list
from runctl.agent.status import read_status
from runctl.store import layout, open_store
from runctl.store.snapshots import Snapshots
from waiting import wait_for

STEPS = 6000
LONG = 24000  # the main test: two notices and a loss before its end
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


def reporting_progress(store, job_id: str, attempt: int):
    """As ``running_with_progress``, once the script reported a step too (train.py does)."""
    instance_id = running_with_progress(store, job_id, attempt)
    status = read_status(store, job_id) if instance_id else None
    return instance_id if status is not None and status.attempts[-1].last_step is not None else None


def final_result(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def ended(store, job_id: str) -> dict | None:
    return (read_group(store, job_id) or {}).get("ended")


def test_a_detached_job_survives_its_submitter_two_notices_and_a_lost_machine(cloud, runctl, runctl_bg,
                                                                             straight_weights):
    proc = runctl_bg("aws", "run", "training/train.py", "--spot", "-t", "t3.micro", "--auto-resume",
                     # Every 1000 steps: train.py keeps its last 3 files, and at 500 a file could
                     # be deleted before a loaded machine's snapshot of it ended; each such snapshot
                     # fails and is tried again (a known gap, docs/ROADMAP.md), and attempt 2 could
                     # end before one succeeded. Steps enough for three attempts to snapshot first.
                     "--", "--steps", str(LONG), "--checkpoint-every", "1000", **FAST_SYNC)
    store = job_store(cloud)
    job_id = wait_for("the job", lambda: the_job(store), proc)
    first = wait_for("attempt 0 to make progress", lambda: reporting_progress(store, job_id, 0), proc,
                     timeout=90)
    proc.send_signal(signal.SIGKILL)  # the laptop is closed: nothing of runctl runs outside AWS now
    proc.communicate()

    notices = [cloud.interrupt(first)]
    second = wait_for("attempt 1 to make progress", lambda: reporting_progress(store, job_id, 1), timeout=90)
    notices.append(cloud.interrupt(second))
    third = wait_for("attempt 2 to make progress", lambda: reporting_progress(store, job_id, 2), timeout=90)
    assert not ended(store, job_id), "the job ended before its machine could be lost: give it more steps"
    cloud.lose(third)
    wait_for("the job to end", lambda: ended(store, job_id), timeout=150)

    status = read_status(store, job_id)
    attempts = status.attempts
    assert status.state == "completed", status
    assert [a.reason for a in attempts] == ["interrupted", "interrupted", "lost", "completed"]
    assert len({a.instance_id for a in attempts}) == 4
    assert [a.instance_id for a in attempts[:2]] == [n["instance_id"] for n in notices]
    for previous, following in zip(attempts[:2], attempts[1:3]):
        assert following.first_step == previous.last_step + 1, attempts  # no step lost: saved on SIGTERM
    assert attempts[-1].last_step == LONG

    records = read_recovery_list(store, job_id)
    assert [r["old_instance"] for r in records] == [first, second, third]
    assert [r["launched"] for r in records] == [a.instance_id for a in attempts[1:]]
    assert [r["reason"] for r in records] == ["spot notice", "spot notice", "lost without a notice"]
    for record, notice in zip(records, notices):
        # Requested at the notice, overlapping the dying instance. How soon is a figure of
        # bench/recovery_bench.py: a bound here failed on a loaded 2-core machine (3.8 s).
        assert notice["at"] <= record["launch_requested"] < notice["deadline"], (record, notice)
    assert ended(store, job_id)["state"] == "completed"

    # Read afterwards from a new shell.
    shown = runctl("status", job_id, "--output", "json")
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)["attempts"]) == 4
    assert [r["launched"] for r in json.loads(shown.stdout)["recovery_records"]] == [a.instance_id
                                                                                    for a in attempts[1:]]
    text = runctl("status", job_id)
    assert "recoveries: 3" in text.stdout and "time lost" in text.stdout, text.stdout
    assert f"group: runctl-{job_id}, deleted when the job completed" in text.stdout, text.stdout
    assert f"recovery 3: {third} lost without a notice -> {attempts[3].instance_id}" in text.stdout, text.stdout
    logs = runctl("logs", job_id)
    assert logs.returncode == 0, logs.stderr
    assert final_result(logs.stdout) == {"final_step": LONG, "weights_sha256": straight_weights(LONG)}
    watched = runctl("aws", "watch", job_id)
    assert watched.returncode == 0, watched.stderr
    assert "completed (3 recoveries)" in watched.stderr


def test_following_stops_on_sigterm_and_watch_reattaches_to_the_exit_code(cloud, runctl, runctl_bg,
                                                                          straight_weights):
    """A CI timeout or `timeout` sends SIGTERM: the following stops, the job does not."""
    proc = runctl_bg("aws", "run", "training/train.py", "--spot", "-t", "t3.micro", "--auto-resume",
                     "--", "--steps", str(STEPS), "--checkpoint-every", "500", **FAST_SYNC)
    store = job_store(cloud)
    job_id = wait_for("the job", lambda: the_job(store), proc)
    wait_for("progress", lambda: running_with_progress(store, job_id, 0), proc, timeout=90)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"stopped following job {job_id}; it goes on" in err and "Traceback" not in err
    assert read_status(store, job_id).state == "running"

    watched = runctl("aws", "watch", job_id, timeout=180)
    assert watched.returncode == 0, watched.stderr
    assert final_result(watched.stdout) == {"final_step": STEPS, "weights_sha256": straight_weights(STEPS)}
    assert f"job {job_id} completed" in watched.stderr


def test_detach_returns_before_the_job_runs_and_watch_ends_with_its_exit_code(cloud, runctl, project):
    (project / "fails.py").write_text("import sys\nprint('working')\nsys.exit(3)\n")
    submitted = runctl("aws", "run", "fails.py", "--no-docker", "--detach", "--job-id", "fails")
    assert submitted.returncode == 0, submitted.stderr
    assert "job fails submitted" in submitted.stdout
    store = job_store(cloud)
    assert read_status(store, "fails") is None  # returned at once: no agent has started it yet
    assert read_group(store, "fails")["group"]["name"] == "runctl-fails"

    watched = runctl("aws", "watch", "fails", timeout=120)
    assert watched.returncode == 1, watched.stderr
    assert "working" in watched.stdout
    assert "job fails failed" in watched.stderr


def test_a_script_that_does_not_save_on_the_signal_loses_at_most_its_checkpoint_interval(
        cloud, runctl_bg, straight_weights):
    # SIGUSR1 as the stop signal: train.py does not handle it and dies without saving, so
    # the next attempt resumes from the last periodic checkpoint.
    every = 500
    proc = runctl_bg("aws", "run", "training/train.py", "--spot", "-t", "t3.micro", "--auto-resume",
                     "--", "--steps", str(STEPS), "--checkpoint-every", str(every),
                     RUNCTL_LOCAL_STOP_SIGNAL="SIGUSR1", **FAST_SYNC)
    store = job_store(cloud)
    job_id = wait_for("the job", lambda: the_job(store), proc)
    instance_id = wait_for("progress", lambda: running_with_progress(store, job_id, 0), proc, timeout=90)
    cloud.interrupt(instance_id)
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err
    assert final_result(out) == {"final_step": STEPS, "weights_sha256": straight_weights(STEPS)}
    first, second = read_status(store, job_id).attempts
    assert first.reason == "interrupted" and first.exit_code < 0  # killed by the signal, nothing saved
    lost = first.last_step - (second.first_step - 1)
    assert 0 <= lost <= every, (first, second)


def test_cancel_during_a_recovery_leaves_nothing_running(cloud, runctl, runctl_bg):
    proc = runctl_bg("aws", "run", "training/train.py", "--spot", "-t", "t3.micro", "--auto-resume",
                     "--", "--steps", "20000", "--checkpoint-every", "500", **FAST_SYNC)
    store = job_store(cloud)
    job_id = wait_for("the job", lambda: the_job(store), proc)
    instance_id = wait_for("progress", lambda: running_with_progress(store, job_id, 0), proc, timeout=90)
    cloud.interrupt(instance_id)
    wait_for("the replacement to be requested",
             lambda: any(r.get("launch_requested") for r in read_recovery_list(store, job_id)),
             proc, timeout=30, interval=0.05)

    cancelled = runctl("aws", "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id} cancelled" in cancelled.stdout
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "cancelled" in err
    assert read_status(store, job_id).state == "stopped"
    assert ended(store, job_id)["state"] == "stopped"
    # The cloud fixture asserts that no group, template, instance or spot request is left.
