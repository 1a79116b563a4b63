"""A job's environment and secrets on AWS, end to end in the fake cloud, through the real CLI.

A named job of .runctl.toml (``[jobs.show]`` with ``[jobs.show.env]`` and
``[jobs.show.secrets]``) is run with ``runctl aws run show --env ...``; its secret is a
SecureString of moto's SSM Parameter Store. The instance's agent reads it with its own
credentials just before the attempt, and the script proves it got the value (its hash,
printed and saved as a checkpoint). Then the value is looked for everywhere runctl writes:
the instance's user-data and the launch template's, every object of the store's bucket, the
agents' logs and files on the instances, the project, and the command's ``--output json``
and stderr. It is in none of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from waiting import wait_for

from .test_auto_resume import job_store, the_job

VALUE = "wandb-key-0f-the-fake-cloud-9d3e1c"
PARAMETER = "/runctl/wandb-api-key"

SHOW = """\
import hashlib, json, os, time
proof = {"greeting": os.environ.get("GREETING"), "plain": os.environ.get("PLAIN"),
         "token_sha256": hashlib.sha256(os.environ.get("WANDB_API_KEY", "").encode()).hexdigest()}
folder = os.environ["RUNCTL_CHECKPOINT_DIR"]
with open(os.path.join(folder, "proof.json.partial"), "w") as f:
    json.dump(proof, f)
os.replace(os.path.join(folder, "proof.json.partial"), os.path.join(folder, "proof.json"))
time.sleep(2)  # a settled file: the agent snapshots it
print(json.dumps(proof), flush=True)
"""

CONFIG = f"""\
[jobs.show]
script = "show.py"
instance_type = "t3.micro"

[jobs.show.env]
GREETING = "from the job table"

[jobs.show.secrets]
WANDB_API_KEY = "ssm:{PARAMETER}"
"""


def holding(folder: Path, value: bytes, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The files under ``folder`` (not under the ``skip`` folders) that hold ``value``."""
    return sorted(str(path) for path in folder.rglob("*")
                  if path.is_file() and not path.is_symlink() and not any(part in skip for part in path.parts)
                  and value in path.read_bytes())


def launch_template_user_data(cloud) -> list[str]:
    ec2 = cloud.client("ec2")
    found = []
    for template in ec2.describe_launch_templates().get("LaunchTemplates", []):
        for version in ec2.describe_launch_template_versions(
                LaunchTemplateId=template["LaunchTemplateId"])["LaunchTemplateVersions"]:
            found.append(base64.b64decode(version["LaunchTemplateData"].get("UserData", "")).decode())
    return found


def instances_user_data(cloud) -> list[str]:
    ec2 = cloud.client("ec2")
    found = []
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            attribute = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
            found.append(base64.b64decode(attribute.get("UserData", {}).get("Value", "")).decode())
    return found


def bucket_objects_holding(cloud, value: bytes) -> tuple[int, list[str]]:
    s3 = cloud.client("s3")
    keys = [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cloud.bucket)
            for obj in page.get("Contents", [])]
    return len(keys), [key for key in keys if value in s3.get_object(Bucket=cloud.bucket, Key=key)["Body"].read()]


def test_a_secret_by_reference_reaches_the_script_and_runctl_writes_it_nowhere(cloud, project, runctl_bg, tmp_path):
    cloud.client("ssm").put_parameter(Name=PARAMETER, Value=VALUE, Type="SecureString")
    (project / "show.py").write_text(SHOW)
    (project / ".runctl.toml").write_text(CONFIG)
    proc = runctl_bg("aws", "run", "show", "--no-docker", "--env", "PLAIN=from the command line",
                     "--output", "json")
    templates = wait_for("the job's launch template", lambda: launch_template_user_data(cloud), proc, timeout=60)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err

    # The script got the value (its hash), the table's env and the option's.
    proof = {"greeting": "from the job table", "plain": "from the command line",
             "token_sha256": hashlib.sha256(VALUE.encode()).hexdigest()}
    assert json.dumps(proof) in err  # the job's output, followed on stderr beside --output json
    store = job_store(cloud)
    job_id = the_job(store)
    assert json.loads(out)["job_id"] == job_id and json.loads(out)["state"] == "completed"
    spec = json.loads(store.read(f"jobs/{job_id}/job.json").data)
    assert spec["secrets"] == {"WANDB_API_KEY": f"ssm:{PARAMETER}"}
    assert spec["env"] == {"GREETING": "from the job table", "PLAIN": "from the command line"}
    saved = [o.key for o in store.list(f"jobs/{job_id}/checkpoints/") if o.key.endswith("/proof.json")]
    assert saved and json.loads(store.read(saved[-1]).data) == proof

    # ... and runctl wrote it nowhere.
    secret = VALUE.encode()
    user_data = templates + instances_user_data(cloud)
    assert user_data and all("runctl" in text for text in user_data)  # a runctl bootstrap was read
    assert not [text for text in user_data if VALUE in text]
    count, holders = bucket_objects_holding(cloud, secret)
    assert count > 0 and holders == []  # job.json, status, logs, checkpoints, code, wheel, group records
    _, plain = bucket_objects_holding(cloud, b"from the command line")  # the look finds what is there:
    assert [key for key in plain if key.endswith("/job.json")]  # an --env value is part of the spec
    agent_logs = sorted((cloud.workdir / "instances").glob("*/agent.log"))
    assert agent_logs and "resolved 1 secret(s): WANDB_API_KEY" in agent_logs[0].read_text()
    assert holding(cloud.workdir / "instances", secret) == []  # agent logs, attempt logs, run folders
    assert holding(project, secret) == []
    assert VALUE not in out and VALUE not in err


def job_name(text: str) -> str:
    return text.split("runctl: job ", 1)[1].split()[0]


def test_a_secret_that_cannot_be_read_fails_the_job_naming_it(cloud, project, runctl):
    (project / "show.py").write_text(SHOW)
    (project / ".runctl.toml").write_text(CONFIG)  # no such parameter in SSM
    done = runctl("aws", "run", "show", "--no-docker")
    assert done.returncode == 1, done.stderr
    line = f"cannot read secret WANDB_API_KEY (ssm:{PARAMETER}): ParameterNotFound"
    assert f"runctl: job {job_name(done.stderr)} failed: {line}" in done.stderr and "Traceback" not in done.stderr
    assert "token_sha256" not in done.stdout + done.stderr  # the script never ran


def test_aws_train_reads_a_secrets_manager_secret_on_the_instance(cloud, project, runctl):
    cloud.client("secretsmanager").create_secret(Name="runctl/wandb-api-key", SecretString=VALUE)
    (project / "show.py").write_text(SHOW)
    created = runctl("aws", "create", "--spot", "--instance-type", "t3.micro", "--wait", "--output", "instance-id")
    assert created.returncode == 0, created.stderr
    instance_id = created.stdout.strip()

    trained = runctl("aws", "train", instance_id, "show.py", "--wait", "--output", "json",
                     "--env", "GREETING=hi", "--secret", "WANDB_API_KEY=secretsmanager:runctl/wandb-api-key")
    assert trained.returncode == 0, trained.stderr + cloud.instances[instance_id].log_path.read_text()
    proof = {"greeting": "hi", "plain": None, "token_sha256": hashlib.sha256(VALUE.encode()).hexdigest()}
    assert json.dumps(proof) in trained.stderr
    assert json.loads(trained.stdout)["state"] == "completed"

    secret = VALUE.encode()
    assert not [text for text in instances_user_data(cloud) if VALUE in text]
    assert bucket_objects_holding(cloud, secret)[1] == []
    assert holding(cloud.workdir / "instances", secret) == []
    assert VALUE not in trained.stdout + trained.stderr
    terminated = runctl("aws", "terminate", instance_id)
    assert terminated.returncode == 0, terminated.stderr
