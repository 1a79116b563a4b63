"""runctl aws setup|iam-policy|cost and runctl resources list|cleanup against moto."""

from __future__ import annotations

import json
import time

import pytest


@pytest.fixture
def managed_policies(monkeypatch):
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # AmazonSSMManagedInstanceCore


def test_setup_dry_run_then_for_real_then_again(tmp_path, monkeypatch, moto_reset, run_cli, run_json):
    import boto3

    monkeypatch.chdir(tmp_path)
    config = tmp_path / ".runctl.toml"
    config.write_text('# mine\n[aws]\nregion = "us-east-1"  # keep this comment\n')
    code, out, err = run_cli("aws", "setup", "--dry-run")
    assert code == 0, err
    assert "s3 bucket runctl-123456789012-us-east-1: would create" in out
    assert "instance profile runctl-instance: would create" in out
    assert config.read_text() == '# mine\n[aws]\nregion = "us-east-1"  # keep this comment\n'
    assert boto3.client("s3").list_buckets()["Buckets"] == []

    done = run_json("aws", "setup")
    assert [s["action"] for s in done["steps"]] == ["create", "create", "update", "create", "add role"]
    assert config.read_text() == ('# mine\n[aws]\nregion = "us-east-1"  # keep this comment\n'
                                  's3_bucket = "runctl-123456789012-us-east-1"\n'
                                  'iam_instance_profile = "runctl-instance"\n')
    again = run_json("aws", "setup")
    assert [s["action"] for s in again["steps"]] == ["exists", "exists", "update", "exists"]
    assert config.read_text().count("s3_bucket") == 1
    code, out, err = run_cli("config", "validate")
    assert code == 0, err


def test_setup_detaches_the_ssm_policy_an_older_setup_attached(tmp_path, monkeypatch, moto_reset, run_cli,
                                                                managed_policies):
    import boto3

    monkeypatch.chdir(tmp_path)
    arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    assert run_cli("aws", "setup", "--region", "us-east-1")[0] == 0
    iam = boto3.client("iam")
    iam.attach_role_policy(RoleName="runctl-instance", PolicyArn=arn)  # as an older runctl left it
    code, out, err = run_cli("aws", "setup", "--region", "us-east-1")
    assert code == 0, err
    said = [line for line in out.splitlines() if "AmazonSSMManagedInstanceCore" in line]
    assert said == ["managed policy AmazonSSMManagedInstanceCore: detached (it lets the instances read every SSM "
                    "parameter; the role's own policy lets the SSM agent in)"]
    assert iam.list_attached_role_policies(RoleName="runctl-instance")["AttachedPolicies"] == []
    code, out, err = run_cli("aws", "setup", "--region", "us-east-1")
    assert code == 0 and "AmazonSSMManagedInstanceCore" not in out


def test_iam_policy_prints_json(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("aws", "iam-policy", "--for", "instance", "--bucket", "b1-bucket")
    assert code == 0
    policy = json.loads(out)
    assert {"arn:aws:s3:::b1-bucket", "arn:aws:s3:::b1-bucket/*"} <= {s["Resource"] for s in policy["Statement"]}
    code, out, _ = run_cli("aws", "iam-policy")
    assert code == 0 and "YOUR-JOB-BUCKET" in out and "runctl:created" in out


def test_cost_of_a_job_from_its_attempts(ec2_project, run_cli, run_json):
    from runctl.agent.status import StatusBook
    from runctl.models import Attempt, JobStatus
    from runctl.store import open_store

    info = run_json("aws", "create", "-t", "g5.xlarge")
    start = time.time() - 2 * 3600
    status = JobStatus("job-c", "completed", attempts=(
        Attempt(0, start, start + 3600, 0, "interrupted", instance_id=info["instance_id"]),
        Attempt(1, start + 3600, start + 7200, 0, "completed", instance_id="i-0123456789abcdef0",
                instance_type="g5.xlarge", az="us-east-1b"),
        Attempt(2, start + 7200, start + 7300, 0, "completed"),  # a local attempt: not counted
    ))
    StatusBook(open_store(f"s3://{ec2_project.bucket}/runctl"), status).heartbeat()
    result = run_json("aws", "cost", "job-c")
    first, second = result["attempts"]
    assert (first["instance_type"], first["lifecycle"], first["az"]) == ("g5.xlarge", "spot", info["az"])
    assert second["note"].startswith("instance i-0123456789abcdef0 not found")
    assert first["hours"] == second["hours"] == 1.0
    assert result["on_demand_usd"] == pytest.approx(2 * 1.006)
    assert 0 < result["total_usd"] < result["on_demand_usd"] and result["saving_percent"] > 99  # moto: $0.00001/h
    assert any("names no EC2 instance" in n for n in result["notes"])
    code, out, err = run_cli("aws", "cost", "job-c")
    assert code == 0 and "saved" in out and "us-east-1 Linux list prices" in err
    code, _, err = run_cli("aws", "cost", "nope")
    assert code == 2 and "no job 'nope'" in err


def test_resources_cleanup_leaves_untagged_instances_running(ec2_project, run_cli, run_json, ec2_client):
    stranger = ec2_client.run_instances(ImageId="ami-0123456789abcdef0", InstanceType="t3.micro", MinCount=1,
                                        MaxCount=1)["Instances"][0]["InstanceId"]
    ours = run_json("aws", "create", "-t", "t3.micro", "--job", "j1")["instance_id"]
    listed = run_json("resources", "list")
    assert {(r["kind"], r["id"]) for r in listed if r["kind"] == "instance"} == {("instance", ours)}
    assert stranger not in json.dumps(listed)

    code, out, err = run_cli("resources", "cleanup", "--dry-run")
    assert code == 0, err
    assert f"would remove instance {ours}" in out and stranger not in out
    code, out, err = run_cli("resources", "cleanup")  # nobody to answer the question: it asks for --yes
    assert code == 2 and f"will remove instance {ours} (us-east-1, job j1)" in err
    assert err.strip().splitlines()[-1] == ("runctl: error: resources cleanup would remove the 2 resource(s) above; "
                                            "pass --yes to remove them without being asked"), err
    assert run_json("resources", "list") == listed  # nothing removed
    code, out, err = run_cli("resources", "cleanup", "--yes")
    assert code == 0 and f"removed instance {ours} (us-east-1, job j1)" in out
    state = {i["InstanceId"]: i["State"]["Name"] for r in ec2_client.describe_instances()["Reservations"]
             for i in r["Instances"]}
    assert state == {stranger: "running", ours: "terminated"}
    assert run_json("resources", "list") == []
    code, _, err = run_cli("resources", "cleanup")
    assert code == 0 and "nothing to clean up" in err


def test_resources_cleanup_asks_and_a_no_removes_nothing(ec2_project, run_cli, run_json, monkeypatch):
    import io

    ours = run_json("aws", "create", "-t", "t3.micro", "--job", "j2")["instance_id"]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, out, err = run_cli("resources", "cleanup", "--job", "j2")
    assert code == 130 and f"will remove instance {ours}" in err and "Remove these 2 resource(s)? [y/N]" in err
    assert {r["id"] for r in run_json("resources", "list")} >= {ours}
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    code, out, err = run_cli("resources", "cleanup", "--job", "j2")
    assert code == 0 and f"removed instance {ours}" in out
    assert run_json("resources", "list") == []
