"""Nothing runs forever, in the fake cloud through the real CLI: a job whose instances never
start their agent fails after ``[aws] max_boot_failures`` boot timeouts and its group is
deleted; an ``aws create`` instance with no job shuts itself down after its idle timeout.
(The ``cloud`` fixture asserts that no group, template, instance or spot request is left.)"""

from __future__ import annotations

import sys

import pytest

from runctl.agent.group_record import boot_failures, read_group
from runctl.agent.status import read_status
from runctl.store import open_store
from waiting import wait_for


def broken_bootstrap(user_data: str) -> list[str]:
    """An instance whose bootstrap never starts the agent: its command exits at once."""
    return [sys.executable, "-c", "raise SystemExit('runctl-bootstrap: pip install failed')"]


@pytest.mark.fake_cloud(agent_command=broken_bootstrap, boot_timeout_s=3.0)
def test_a_job_whose_agent_never_starts_fails_after_max_boot_failures(cloud, runctl):
    done = runctl("aws", "run", "training/train.py", "--no-docker", "--job-id", "never-boots", "--timeout", "150",
                  RUNCTL_AWS_MAX_BOOT_FAILURES="2", timeout=180)
    assert done.returncode == 1, done.stderr
    assert "job never-boots failed" in done.stderr
    assert "did not start within 900s on 2 instances in a row" in done.stderr
    store = open_store(f"s3://{cloud.bucket}/runctl", session=cloud.session(), endpoint_url=cloud.endpoint)
    assert read_status(store, "never-boots").state == "failed"
    assert read_group(store, "never-boots")["ended"]["state"] == "failed"
    assert len(boot_failures(store, "never-boots")) == 2


def test_an_idle_created_instance_shuts_itself_down(cloud, runctl):
    created = runctl("aws", "create", "--spot", "-t", "t3.micro", "--idle-timeout", "0.05", "--wait",
                     "--output", "instance-id")
    assert created.returncode == 0, created.stderr
    instance_id = created.stdout.strip()
    ec2 = cloud.client("ec2")

    def state() -> str:
        return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]

    wait_for("the idle instance to go", lambda: state() in ("shutting-down", "terminated"), timeout=90)
    assert "idle timeout 3s" in cloud.instances[instance_id].log_path.read_text()
