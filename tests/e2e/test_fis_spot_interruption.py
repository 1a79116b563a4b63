"""A real spot interruption, sent by AWS Fault Injection Service, seen by runctl's agent:

    I=$(runctl aws create --spot --instance-type t3.micro --job JOB --wait --output instance-id)
    runctl aws train $I training/train.py --sync-code --job-id JOB -- --steps 5000000 --checkpoint-every 2000
    # FIS: aws:ec2:send-spot-instance-interruptions on $I, durationBeforeInterruption PT2M
    runctl status JOB --store s3://BUCKET/runctl --output json

The job's status must show the spot notice (action terminate, with its deadline), the attempt
ended as interrupted, and a final snapshot that holds the step the script saved on SIGTERM,
committed after the notice and before its deadline; then FIS reclaims the instance.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

NEVER_DONE = 5_000_000  # steps: hours on a t3.micro; the job must still run when the notice comes
EVERY = 2000  # --checkpoint-every
BOOT_TIMEOUT_S = 1200  # launch to a durable snapshot: dnf Python 3.11, pip install runctl, restore, start
NOTICE_TIMEOUT_S = 300  # FIS start to the attempt's end as runctl records it


def attempt_ended(status: dict | None) -> dict | None:
    """The status once the first attempt has ended after a notice."""
    if status is None or not status["attempts"] or status["notice"] is None:
        return None
    return status if status["attempts"][0]["ended"] is not None else None


def test_fis_spot_notice_is_recorded_with_a_final_snapshot(project, fis, cleanup, wait_until, e2e):
    """Cost: one t3.micro spot instance (t3a.micro / t2.micro as fallbacks) for 10-15 minutes:
    under $0.01 of spot time (about $0.003/h), up to $0.01 of T3 unlimited CPU credits (the job
    keeps a vCPU busy), an 8 GB gp3 volume for minutes; plus FIS: 2 action-minutes at $0.10 =
    $0.20. About $0.21 a run (us-east-1 prices), 12-20 minutes, most of it the instance's
    bootstrap (Python 3.11 and the runctl wheel installed by the user data)."""
    job = cleanup.job(e2e.job_id("fis-notice"))
    types = project.instance_types
    created = project.runctl.json("aws", "create", "--spot", "--instance-type", types[0],
                                  "--fallback-types", ",".join(types[1:]), "--job", job, "--wait", "--timeout", "600")
    instance_id = cleanup.instance(created["instance_id"])
    assert created["state"] == "running" and created["lifecycle"] == "spot", created

    sent = project.runctl.json("aws", "train", instance_id, "training/train.py", "--sync-code", "--job-id", job,
                               "--", "--steps", NEVER_DONE, "--checkpoint-every", EVERY)
    assert sent["job_id"] == job and sent["instance_id"] == instance_id and sent["code_tree"], sent

    running = wait_until("the job to run on the instance with a durable snapshot",
                         lambda: project.progress(job, 0), timeout=BOOT_TIMEOUT_S,
                         context=lambda: project.diagnose(instance_id))
    assert running["instance_id"] == instance_id

    experiment = fis.interrupt(instance_id, duration="PT2M")
    status = wait_until("runctl to record the spot notice and end the attempt",
                        lambda: attempt_ended(project.status(job)), timeout=NOTICE_TIMEOUT_S, interval=3,
                        context=lambda: project.diagnose(instance_id))

    # The notice, as the agent read it from the instance metadata (spot/instance-action).
    notice = status["notice"]
    assert (notice["source"], notice["action"]) == ("spot", "terminate"), notice
    assert notice["deadline"] is not None and 0 < notice["deadline"] - notice["received"] <= 150, notice
    (attempt,) = status["attempts"]
    assert attempt["instance_id"] == instance_id
    assert attempt["reason"] == "interrupted", attempt
    assert attempt["interruption"]["source"] == "spot", attempt
    assert status["state"] == "interrupted", status  # nothing resumes it here: it waits for a machine

    # The final snapshot: the latest, committed after the notice and before the deadline, and
    # holding the checkpoint train.py wrote on SIGTERM (its last step: nothing lost).
    final = attempt["final_snapshot"]
    snapshots = project.snapshots(job)
    assert final is not None and snapshots and snapshots[-1]["seq"] == final, (attempt, snapshots)
    info = project.runctl.json("checkpoint", "info", "--store", project.store, "--job", job, final)
    assert info["metadata"]["attempt"] == 0
    assert f"ckpt-{attempt['last_step']:06d}.json" in {f["path"] for f in info["files"]}, (attempt, info)
    committed = e2e.iso_epoch(info["created"])
    assert notice["received"] - 1 <= committed <= notice["deadline"], (notice, info["created"])
    project.runctl("checkpoint", "verify", "--store", project.store, "--job", job, final)

    shown = project.runctl("status", job, "--store", project.store).stdout
    assert "last notice: spot terminate" in shown and "interrupted" in shown, shown

    # FIS reclaims the instance once durationBeforeInterruption has passed.
    project.runctl("aws", "wait", instance_id, "--state", "terminated", "--timeout", "600", timeout=700)
    done = fis.wait_done(experiment["id"])
    assert done["status"] == "completed", done
