"""runctl aws create|status|wait|stop|start|terminate|exec|processes against moto, and the
one-line errors: unknown instance type, missing bucket, no credentials, unknown region, an
instance that is not running."""

from __future__ import annotations

import base64

import pytest

RUNCTL_TAGS = {"runctl:job", "runctl:project", "runctl:user", "runctl:created"}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("runctl: error: ")
    return lines[0][len("runctl: error: "):]


def described(client, instance_id: str) -> dict:
    return client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


KEY_ID, SECRET = "AKIARUNCTLTESTKEY123", "runctl-test-secret-access-key-value"


@pytest.fixture
def distinct_credentials(monkeypatch):
    """Credentials whose values can be looked for (moto accepts any)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)


def created_user_data(run_json, ec2_client, *args: str) -> tuple[dict, str]:
    info = run_json("aws", "create", *args)
    encoded = ec2_client.describe_instance_attribute(InstanceId=info["instance_id"], Attribute="userData")
    return info, base64.b64decode(encoded["UserData"]["Value"]).decode()


def test_create_spot_reads_back_tags_bootstrap_and_no_credentials(ec2_project, run_json, ec2_client,
                                                             distinct_credentials):
    info, text = created_user_data(run_json, ec2_client, "--instance-type", "t3.micro", "--job", "train-1", "--wait")
    assert info["state"] == "running" and info["lifecycle"] == "spot" and info["instance_type"] == "t3.micro"
    data = described(ec2_client, info["instance_id"])
    assert data["InstanceLifecycle"] == "spot"
    tags = {t["Key"]: t["Value"] for t in data["Tags"]}
    assert RUNCTL_TAGS <= set(tags)
    assert (tags["runctl:job"], tags["runctl:project"], tags["runctl:user"]) == ("train-1", "myproj", "moto")
    assert text.startswith("#!/bin/bash")
    assert f"s3://{ec2_project.bucket}/runctl" in text  # the agent's store
    for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "aws_secret", "X-Amz-Credential", SECRET, KEY_ID):
        assert secret not in text


def test_create_on_demand_prints_the_bare_id_and_the_lifecycle_commands(ec2_project, run_cli, run_json, ec2_client):
    code, out, err = run_cli("aws", "create", "--on-demand", "-t", "t3.small", "--output", "instance-id")
    assert code == 0, err
    instance_id = out.strip()
    assert out == f"{instance_id}\n" and instance_id.startswith("i-")
    data = described(ec2_client, instance_id)
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    assert "InstanceLifecycle" not in data

    assert run_json("aws", "status", instance_id)["state"] in ("pending", "running")
    assert run_json("aws", "wait", instance_id, "--poll", "0.1")["state"] == "running"
    assert run_json("aws", "stop", instance_id)["state"] in ("stopping", "stopped")
    code, out, err = run_cli("aws", "status", instance_id, "--require-running")
    assert code == 3 and instance_id in out
    assert one_error_line(err) == f"instance {instance_id} is stopped; start it with runctl aws start {instance_id}"
    code, out, err = run_cli("aws", "exec", instance_id, "--", "ls", "-la")
    assert (code, out) == (3, "")
    assert one_error_line(err) == f"instance {instance_id} is stopped; start it with runctl aws start {instance_id}"
    assert run_json("aws", "start", instance_id)["state"] in ("pending", "running")
    code, out, err = run_cli("aws", "terminate", instance_id)
    assert code == 0 and out.startswith(f"terminating: {instance_id}")
    code, _, err = run_cli("aws", "stop", instance_id)
    assert code == 3
    assert one_error_line(err) == f"instance {instance_id} is terminated; there is nothing to stop"


def test_unknown_instance_type_is_exit_2_before_anything_launches(ec2_project, run_cli, ec2_client):
    code, out, err = run_cli("aws", "create", "--instance-type", "t3.mega")
    assert (code, out) == (2, "")
    assert one_error_line(err).startswith("unknown instance type 't3.mega'; did you mean 't3.medium'?")
    code, _, err = run_cli("aws", "create", "--instance-type", "t3.micro", "--fallback-types", "t9.large")
    assert code == 2
    assert one_error_line(err).startswith("unknown instance type 't9.large' in us-east-1")
    assert ec2_client.describe_instances()["Reservations"] == []


def test_missing_bucket_is_exit_3_with_the_stores_message(ec2_project, run_cli, ec2_client):
    (ec2_project.root / ".runctl.toml").write_text('[aws]\ns3_bucket = "no-such-bucket-runctl"\n')
    code, out, err = run_cli("aws", "create", "-t", "t3.micro")
    assert (code, out) == (3, "")
    assert one_error_line(err).startswith("bucket 'no-such-bucket-runctl' does not exist; create it (runctl aws setup")
    assert ec2_client.describe_instances()["Reservations"] == []


def test_no_credentials_is_exit_3_in_one_line(ec2_project, run_cli, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for args in (["aws", "create", "-t", "t3.micro"], ["aws", "status", "i-0123456789abcdef0"]):
        code, out, err = run_cli(*args)
        assert (code, out) == (3, "")
        assert one_error_line(err).startswith("no AWS credentials found; configure them")


def test_a_missing_aws_profile_is_exit_3_in_one_line(ec2_project, run_cli, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "nope")
    for args in (["aws", "create", "-t", "t3.micro"], ["aws", "status", "i-0123456789abcdef0"],
                 ["resources", "list"]):
        code, out, err = run_cli(*args)
        assert (code, out) == (3, ""), (args, err)
        assert one_error_line(err).startswith("AWS profile 'nope' not found; fix AWS_PROFILE")


def test_unknown_region_is_exit_2_before_any_request(ec2_project, run_cli, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any request would fail
    code, out, err = run_cli("aws", "create", "--region", "xx-1")
    assert (code, out) == (2, "")
    assert one_error_line(err).startswith("unknown region 'xx-1'")
    code, _, err = run_cli("aws", "status", "i-0123456789abcdef0", "--region", "us-est-1")
    assert code == 2 and "'us-east-1'" in one_error_line(err)


def test_unknown_instance_and_untagged_instances(ec2_project, run_cli, ec2_client):
    code, _, err = run_cli("aws", "status", "i-0123456789abcdef0")
    assert code == 3 and one_error_line(err) == "instance i-0123456789abcdef0 not found in us-east-1"
    stranger = ec2_client.run_instances(ImageId="ami-0123456789abcdef0", InstanceType="t3.micro", MinCount=1,
                                        MaxCount=1)["Instances"][0]["InstanceId"]
    code, _, err = run_cli("aws", "terminate", stranger)
    assert code == 2 and one_error_line(err).startswith(f"instance {stranger} was not launched by runctl")
    assert described(ec2_client, stranger)["State"]["Name"] == "running"


def test_exec_and_processes_through_ssm(ec2_project, run_cli, run_json, monkeypatch):
    from runctl.backends.aws.ssm import Ssm

    instance_id = run_json("aws", "create", "--on-demand", "-t", "t3.micro")["instance_id"]
    monkeypatch.setattr(Ssm, "is_managed", lambda self, iid: False)  # moto has no DescribeInstanceInformation
    code, out, err = run_cli("aws", "exec", instance_id, "--", "uptime")
    assert (code, out) == (3, "")
    assert one_error_line(err).startswith(f"instance {instance_id} is not managed by SSM (no SSM agent, or no "
                                          "instance profile that lets the agent in)")
    monkeypatch.setattr(Ssm, "is_managed", lambda self, iid: True)
    result = run_json("aws", "exec", instance_id, "--", "echo", "hello world")
    assert (result["status"], result["exit_code"], result["stdout"]) == ("Success", 0, "")  # moto runs nothing
    code, out, err = run_cli("aws", "processes", instance_id)
    assert code == 0 and "no process listing" in err
    assert run_json("aws", "processes", instance_id) == {"instance_id": instance_id, "processes": [], "gpus": []}


# -- the price per hour, before launching ------------------------------------------------------------

TABLE = "runctl's built-in table of us-east-1 list prices of 2024, not the Price List"


def test_create_shows_the_spot_and_on_demand_price_per_hour_first(ec2_project, run_cli):
    code, out, err = run_cli("aws", "create", "-t", "g5.xlarge", "--fallback-types", "t3.micro",
                             "--output", "instance-id")
    assert code == 0, err
    # moto's spot history says $0.00001 in every zone; it has no Price List: the table stands in, and says so.
    assert f"price: g5.xlarge in us-east-1: spot $0.000010/h (us-east-1a), on-demand $1.0060/h ({TABLE})" in err
    assert f"price: t3.micro in us-east-1: spot $0.000010/h (us-east-1a), on-demand $0.0104/h ({TABLE})" in err
    assert out.strip().startswith("i-")


def test_max_price_per_hour_refuses_more_before_anything_launches(ec2_project, run_cli, ec2_client):
    code, out, err = run_cli("aws", "create", "-t", "g5.xlarge", "--on-demand", "--max-price-per-hour", "0.5")
    assert (code, out) == (2, "")
    assert err.strip().splitlines()[-1] == (
        "runctl: error: every instance type asked for costs more than --max-price-per-hour 0.5: "
        "g5.xlarge ($1.0060/h on-demand); choose a cheaper type or raise the limit")
    assert ec2_client.describe_instances()["Reservations"] == []


def test_max_price_per_hour_drops_the_dear_fallbacks_and_bids_no_more(ec2_project, run_json, ec2_client, run_cli):
    code, out, err = run_cli("--output", "json", "aws", "create", "-t", "t3.micro", "--on-demand",
                             "--fallback-types", "g5.xlarge", "--max-price-per-hour", "0.05")
    assert code == 0, err
    assert "skipping g5.xlarge ($1.0060/h on-demand): more than --max-price-per-hour 0.05" in err
    assert __import__("json").loads(out)["instance_type"] == "t3.micro"

    info = run_json("aws", "create", "-t", "t3.micro", "--spot", "--max-price-per-hour", "0.05")
    [fleet] = [f for f in ec2_client.describe_fleets()["Fleets"]
               if info["instance_id"] in {i for x in f.get("Instances", []) for i in x["InstanceIds"]}]
    # The limit is the spot bid too: the price may rise while the instance runs.
    assert [o.get("MaxPrice") for o in fleet["LaunchTemplateConfigs"][0]["Overrides"]] == ["0.05"], fleet


def test_aws_run_refuses_a_dear_type_before_launching(ec2_project, run_cli, ec2_client):
    (ec2_project.root / "train.py").write_text("print('must not run')\n")
    code, out, err = run_cli("aws", "run", "train.py", "-t", "g5.xlarge", "--on-demand", "--max-price-per-hour",
                             "0.5", "--no-docker", "--timeout", "30")
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith(
        "runctl: error: every instance type asked for costs more than --max-price-per-hour 0.5: g5.xlarge")
    assert ec2_client.describe_instances()["Reservations"] == []
