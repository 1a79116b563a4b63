"""The fake cloud harness: an agent process per running emulated instance, killed with it."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from runctl.testing.cloud import FakeCloud
from waiting import wait_for

# A stand-in agent: records its environment, then polls its own metadata service.
AGENT = """
import json, os, sys, time, urllib.request
home = os.environ["RUNCTL_HOME"]
json.dump({k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_EC2_METADATA_SERVICE_ENDPOINT")},
          open(os.path.join(home, "env.json"), "w"))
time.sleep(600)
"""


def stand_in(script: Path):
    def agent_command(user_data: str) -> list[str]:
        if "runctl-test-agent" not in user_data:
            raise ValueError("not ours")
        return ["/opt/runctl/venv/bin/python", str(script)]

    return agent_command


@pytest.fixture
def cloud(tmp_path, fake_cloud_options):
    """A harness of the test's own over the session's moto server (the command-line tests
    below start servers of their own)."""
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    with FakeCloud(tmp_path / "cloud", agent_command=stand_in(script), notice_deadline_s=1.5,
                   **fake_cloud_options) as fake:
        yield fake


def test_a_harness_on_a_shared_server_starts_from_an_empty_cloud_and_leaves_the_server_running(
        tmp_path, moto_server, fake_cloud_options):
    import boto3

    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name="us-east-1")
    image = fake_cloud_options["image_id"]
    earlier = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0]
    with FakeCloud(tmp_path / "cloud", **fake_cloud_options) as fake:
        assert (fake.endpoint, fake.agent_python, fake.image_id) == (
            moto_server, fake_cloud_options["agent_python"], image)
        assert fake.leftovers() == []  # the earlier instance went with the reset
        assert not (tmp_path / "cloud" / "agent-env").exists()
    found = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert earlier["InstanceId"] not in found  # and the server still answers


def launch(cloud: FakeCloud, user_data: str = "#!/bin/bash\n# runctl-test-agent\n", **extra) -> str:
    ec2 = cloud.client("ec2")
    reply = ec2.run_instances(ImageId=cloud.image_id, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                              UserData=user_data, **extra)
    return reply["Instances"][0]["InstanceId"]


def test_a_running_instance_runs_its_agent_with_the_fake_endpoints(cloud):
    instance_id = launch(cloud, InstanceMarketOptions={"MarketType": "spot"})
    instance = wait_for("the instance", lambda: cloud.instances.get(instance_id), timeout=10, interval=0.05)
    env = json.loads(wait_for("the agent's env.json", lambda: (instance.home / "env.json").exists()
                              and (instance.home / "env.json").read_text(), timeout=10, interval=0.05))
    assert env["AWS_ENDPOINT_URL"] == cloud.endpoint
    assert env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == instance.imds.endpoint
    with urllib.request.urlopen(urllib.request.Request(instance.imds.endpoint + "/latest/api/token", method="PUT",
                                                       headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})) as r:
        token = r.read().decode()
    request = urllib.request.Request(instance.imds.endpoint + "/latest/meta-data/instance-life-cycle",
                                     headers={"X-aws-ec2-metadata-token": token})
    with urllib.request.urlopen(request) as r:
        assert r.read().decode() == "spot"


def test_terminating_the_instance_kills_its_processes(cloud):
    instance_id = launch(cloud)
    instance = wait_for("the instance", lambda: cloud.instances.get(instance_id), timeout=10, interval=0.05)
    pid = instance.process.pid
    cloud.client("ec2").terminate_instances(InstanceIds=[instance_id])
    wait_for(f"the agent (pid {pid}) to die", lambda: not psutil.pid_exists(pid)
             or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=10, interval=0.05)
    assert cloud.leftovers() == []


def test_an_instance_without_a_runctl_agent_runs_nothing(cloud):
    instance_id = launch(cloud, user_data="#!/bin/bash\necho hello\n")
    instance = wait_for("the instance", lambda: cloud.instances.get(instance_id), timeout=10, interval=0.05)
    assert instance.process is None
    cloud.client("ec2").terminate_instances(InstanceIds=[instance_id])


def test_interrupt_serves_a_notice_then_terminates_at_the_deadline(cloud):
    instance_id = launch(cloud, InstanceMarketOptions={"MarketType": "spot"})
    instance = wait_for("the instance", lambda: cloud.instances.get(instance_id), timeout=10, interval=0.05)
    record = cloud.interrupt()
    assert record["instance_id"] == instance_id
    assert instance.imds.notice is not None and instance.imds.deadline_epoch == record["deadline"]
    wait_for("the instance to be killed at the deadline", lambda: instance.killed, timeout=10, interval=0.05)
    assert time.time() >= record["deadline"]
    state = cloud.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "terminated"
    assert cloud.leftovers() == []


def test_leftovers_names_what_is_still_running(cloud):
    instance_id = launch(cloud)
    assert any(instance_id in item for item in cloud.leftovers())
    cloud.client("ec2").terminate_instances(InstanceIds=[instance_id])


def test_the_command_line_runs_a_command_in_the_fake_cloud(tmp_path):
    import subprocess

    probe = "import os, boto3; print(boto3.client('s3').list_buckets()['Buckets'][0]['Name']); raise SystemExit(7)"
    result = subprocess.run([sys.executable, "-m", "runctl.testing.cloud", "--workdir", str(tmp_path), "--",
                             sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 7, result.stderr
    assert result.stdout.strip() == "runctl-fake-cloud"


def test_aws_setup_in_the_fake_cloud_leaves_the_users_config_as_it_was(tmp_path):
    import shlex
    import subprocess

    project = tmp_path / "project"
    project.mkdir()
    original = b'# my settings\n[aws]\nregion = "us-east-1"  # keep\n'
    (project / ".runctl.toml").write_bytes(original)
    runctl = f"{shlex.quote(sys.executable)} -m runctl"
    script = f"{runctl} aws setup >/dev/null && {runctl} config show --output json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCTL_")}
    result = subprocess.run(
        [sys.executable, "-m", "runctl.testing.cloud", "--workdir", str(tmp_path / "cloud"), "--", "sh", "-c", script],
        cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (project / ".runctl.toml").read_bytes() == original
    copy = tmp_path / "cloud" / "config" / ".runctl.toml"
    assert json.loads(result.stdout)["source"] == str(copy)  # what every command there reads
    recorded = copy.read_text()
    assert recorded.startswith("# my settings") and 's3_bucket = "runctl-fake-cloud"' in recorded


def test_a_call_the_emulator_lacks_gives_one_line_and_no_server_traceback(tmp_path):
    import shlex
    import subprocess

    # moto implements no DescribeInstanceInformation: `aws exec` asks it first.
    project = tmp_path / "project"
    project.mkdir()
    runctl = f"{shlex.quote(sys.executable)} -m runctl"
    script = (f'id=$({runctl} aws create -t t3.micro --output instance-id) || exit 9; '
              f'{runctl} aws exec "$id" -- ls; code=$?; {runctl} aws terminate "$id" >/dev/null; exit $code')
    result = subprocess.run(
        [sys.executable, "-m", "runctl.testing.cloud", "--workdir", str(tmp_path / "cloud"), "--", "sh", "-c", script],
        cwd=project, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "NotImplementedError" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("runctl:")]
    assert len(errors) == 1 and errors[0].startswith("runctl: error: cannot ask SSM about i-"), result.stderr
    assert errors[0].endswith(": DescribeInstanceInformation answered HTTP 500 (an AWS emulator may not "
                              "implement it)"), result.stderr
    assert "describe_instance_information action has not been implemented" in (
        tmp_path / "cloud" / "emulator.log").read_text()


def test_sigterm_to_the_command_line_leaves_no_agent_running(tmp_path):
    import signal
    import subprocess

    project = tmp_path / "project"
    project.mkdir()
    script = f"{sys.executable} -m runctl aws create -t t3.micro --output instance-id && sleep 120"
    # Output to a file: the shell's `sleep`, orphaned when the shell goes, keeps a pipe open.
    output = open(tmp_path / "output.txt", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "runctl.testing.cloud", "--workdir", str(tmp_path / "cloud"),
                             "--", "sh", "-c", script], cwd=project, stdout=output, stderr=output)
    try:
        agent_log = wait_for("an instance's agent.log",
                             lambda: next((tmp_path / "cloud" / "instances").glob("*/agent.log"), None),
                             timeout=60, interval=0.05)
        wait_for("the resident agent to start", lambda: "resident agent on" in agent_log.read_text(),
                 timeout=60, interval=0.05)
        agents = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path / "cloud") in " ".join(
            p.info["cmdline"] or ())]
        assert agents, "the instance's agent should be running"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        output.close()
    assert not [p for p in agents if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
