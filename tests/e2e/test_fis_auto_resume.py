"""Auto-resume on real AWS, through a spot interruption sent by AWS Fault Injection Service:

    runctl aws run training/train.py --spot -t t3.micro --auto-resume --job-id JOB \\
        -- --steps 200000 --checkpoint-every 2000
    # once the first attempt has a durable snapshot: FIS interrupts its instance (PT2M)

The command must exit 0 with the weights of a straight local run of train.py (same steps),
the job having run on two instances (interrupted, then completed, resuming from the first
attempt's final snapshot with no step lost); ``runctl status`` shows the recovery, and
``runctl resources list --job JOB`` is empty afterwards.

The weights are compared with a run of training/train.py on this machine. train.py is pure
Python: the same IEEE arithmetic everywhere, except that math.sin / math.tanh come from the
platform's C library; Linux (glibc) gives the same results as the instance, another libc
(macOS) could differ in the last bit and so in the hash.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(5400)]

EVERY = 2000  # --checkpoint-every
BOOT_TIMEOUT_S = 1500  # the command's start to the first attempt's durable snapshot
RUN_TIMEOUT_S = 3600  # the FIS notice to the command's end (a replacement boots, then trains)


def test_auto_resume_after_a_fis_interruption_completes_on_a_second_instance(
        project, fis, cleanup, straight_run, wait_until, e2e):
    """Cost: two t3.micro spot instances (t3a.micro / t2.micro as fallbacks), the first for about
    8-12 minutes, its replacement (launched at the notice, overlapping it) for about 10-20
    minutes depending on RUNCTL_E2E_STEPS: under $0.01 of spot time, up to about $0.02 of T3
    unlimited CPU credits, two 8 GB gp3 volumes for minutes; plus FIS: 2 action-minutes at
    $0.10 = $0.20. About $0.22 a run (us-east-1 prices), 20-35 minutes of wall time. The local
    reference run of train.py (200000 steps: a few minutes of one CPU here) runs meanwhile."""
    steps = project.settings.steps
    reference = straight_run(steps)
    job = cleanup.job(e2e.job_id("auto-resume"))
    types = project.instance_types
    run = project.runctl.start("aws", "run", "training/train.py", "--spot", "--instance-type", types[0],
                               "--auto-resume", "--job-id", job, "--", "--steps", steps, "--checkpoint-every", EVERY)

    first = wait_until("the first attempt to run with a durable snapshot", lambda: project.progress(job, 0),
                       timeout=BOOT_TIMEOUT_S, proc=run, context=lambda: project.last_error)
    first_instance = cleanup.instance(first["instance_id"])
    experiment = fis.interrupt(first_instance, duration="PT2M")

    code = run.wait(RUN_TIMEOUT_S)
    status = project.status(job)
    assert status is not None, project.last_error
    attempts = status["attempts"]
    if attempts and attempts[0]["reason"] == "completed":
        pytest.fail(f"the job finished before the FIS notice reached it ({attempts[0]}): "
                    "raise RUNCTL_E2E_STEPS so that it runs longer")
    assert code == 0, run.tail()

    # The result: the same weights as a straight run, all steps done.
    assert e2e.last_json_line(run.stdout) == {"final_step": steps, "weights_sha256": reference()}

    # Two attempts on two instances: interrupted by the spot notice, then completed on the
    # replacement, resumed from the first one's final snapshot without losing a step.
    assert status["state"] == "completed", status
    assert [a["reason"] for a in attempts] == ["interrupted", "completed"], attempts
    interrupted, resumed = attempts
    assert interrupted["instance_id"] == first_instance
    assert interrupted["interruption"]["source"] == "spot", interrupted
    assert interrupted["final_snapshot"] is not None
    assert resumed["instance_id"] and resumed["instance_id"] != first_instance, attempts
    assert resumed["resumed_from"] == interrupted["final_snapshot"], attempts
    assert resumed["first_step"] == interrupted["last_step"] + 1, attempts
    assert resumed["last_step"] == steps

    # What the user sees: the recovery in the command's last line and in runctl status.
    assert f"job {job} completed (1 recovery)" in run.stderr, run.stderr[-3000:]
    assert f"job {job} resumes on {resumed['instance_id']}" in run.stderr, run.stderr[-3000:]
    shown = project.runctl("status", job, "--store", project.store).stdout
    assert "recoveries: 1" in shown and first_instance in shown and resumed["instance_id"] in shown, shown

    # FIS did reclaim the first instance; the replacement's agent deleted the job's group and
    # shut its machine down; nothing is left.
    project.runctl("aws", "wait", first_instance, "--state", "terminated", "--timeout", "600", timeout=700)
    done = fis.wait_done(experiment["id"])
    assert done["status"] == "completed", done
    wait_until("runctl resources list --job to be empty", lambda: project.resources(job) == [], timeout=300,
               interval=10)
