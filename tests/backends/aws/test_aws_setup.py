"""The job bucket and the instance role: created once, least privilege, dry run changes nothing;
the keys recorded in the user's .runctl.toml, every other byte of it kept."""

from __future__ import annotations

import json
import tomllib

import pytest

from runctl.backends.aws import iam
from runctl.backends.aws.setup import ensure_bucket, ensure_instance_role, set_config_keys
from runctl.errors import AccessDenied, CloudError, ConfigError

BUCKET = "runctl-123456789012-us-east-1"


@pytest.fixture
def managed_policies(monkeypatch):
    """moto loads AWS managed policies (AmazonSSMManagedInstanceCore) only when asked to."""
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")


SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"


def _inline(client, role="runctl-instance"):
    document = client.get_role_policy(RoleName=role, PolicyName="runctl-instance")["PolicyDocument"]
    return json.loads(document) if isinstance(document, str) else document


def _attached(client, role="runctl-instance"):
    return [p["PolicyArn"] for p in client.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]


def test_setup_creates_once_and_then_finds_everything(aws):
    s3, client = aws.client("s3"), aws.client("iam")
    planned = ensure_bucket(s3, BUCKET, "us-east-1", dry_run=True)
    planned += ensure_instance_role(client, role="runctl-instance", bucket=BUCKET, account="123456789012",
                                    dry_run=True)
    assert [(s.resource, s.action, s.done) for s in planned] == [
        ("s3 bucket", "create", False), ("iam role", "create", False), ("iam role policy", "update", False),
        ("instance profile", "create", False), ("instance profile", "add role", False)]
    assert s3.list_buckets()["Buckets"] == [] and client.list_roles()["Roles"] == []
    assert planned[0].describe() == f"s3 bucket {BUCKET}: would create"

    made = ensure_bucket(s3, BUCKET, "us-east-1")
    made += ensure_instance_role(client, role="runctl-instance", bucket=BUCKET, account="123456789012")
    assert [s.action for s in made] == ["create", "create", "update", "create", "add role"]
    assert made[1].describe() == "iam role runctl-instance: created"
    again = ensure_bucket(s3, BUCKET, "us-east-1")
    again += ensure_instance_role(client, role="runctl-instance", bucket=BUCKET, account="123456789012")
    assert [s.action for s in again] == ["exists", "exists", "update", "exists"]

    profile = client.get_instance_profile(InstanceProfileName="runctl-instance")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["runctl-instance"]
    # No managed policy: the inline one lets the SSM agent in and reads only /runctl/* parameters.
    assert _attached(client) == []
    trust = client.get_role(RoleName="runctl-instance")["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert _inline(client) == iam.instance_policy(BUCKET, account="123456789012")
    assert s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]["BlockPublicPolicy"]


def _older_runctls_role(client, role="runctl-instance", tagged=True):
    """What an older runctl aws setup left: its tagged role, an older inline policy, and
    AmazonSSMManagedInstanceCore attached (beside a policy of the user's, which stays)."""
    tags = [{"Key": "runctl:created", "Value": "2026-11-29T10:00:00Z"}] if tagged else []
    client.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(iam.trust_policy()), Tags=tags)
    client.put_role_policy(RoleName=role, PolicyName="runctl-instance", PolicyDocument=json.dumps(
        {"Version": iam.VERSION, "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]}))
    client.attach_role_policy(RoleName=role, PolicyArn=SSM_CORE)
    client.attach_role_policy(RoleName=role, PolicyArn="arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy")
    client.create_instance_profile(InstanceProfileName=role)
    client.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)


def test_setup_detaches_the_managed_policy_an_older_runctl_attached(aws, managed_policies):
    client = aws.client("iam")
    _older_runctls_role(client)

    planned = ensure_instance_role(client, role="runctl-instance", bucket=BUCKET, account="123456789012",
                                   dry_run=True)
    assert [(s.resource, s.action, s.done) for s in planned] == [
        ("iam role", "exists", True), ("iam role policy", "update", False), ("managed policy", "detach", False),
        ("instance profile", "exists", True)]
    assert planned[2].describe().startswith("managed policy AmazonSSMManagedInstanceCore: would detach (it lets")
    assert SSM_CORE in _attached(client)

    steps = ensure_instance_role(client, role="runctl-instance", bucket=BUCKET, account="123456789012")
    assert [(s.resource, s.action, s.done) for s in steps] == [
        ("iam role", "exists", True), ("iam role policy", "update", True), ("managed policy", "detach", True),
        ("instance profile", "exists", True)]
    assert steps[2].describe() == (
        "managed policy AmazonSSMManagedInstanceCore: detached (it lets the instances read every SSM parameter; "
        "the role's own policy lets the SSM agent in)")
    assert _attached(client) == ["arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"]  # the user's: kept
    assert _inline(client) == iam.instance_policy(BUCKET, account="123456789012")

    again = ensure_instance_role(client, role="runctl-instance", bucket=BUCKET, account="123456789012")
    assert [(s.resource, s.action) for s in again] == [
        ("iam role", "exists"), ("iam role policy", "update"), ("instance profile", "exists")]
    assert _attached(client) == ["arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"]
    assert _inline(client) == iam.instance_policy(BUCKET, account="123456789012")


def test_setup_leaves_the_managed_policy_on_a_role_runctl_did_not_make(aws, managed_policies):
    client = aws.client("iam")
    _older_runctls_role(client, role="team-role", tagged=False)
    steps = ensure_instance_role(client, role="team-role", bucket=BUCKET, account="123456789012")
    assert [(s.resource, s.action, s.done) for s in steps] == [
        ("iam role", "exists", True), ("iam role policy", "update", True), ("managed policy", "keep", True),
        ("instance profile", "exists", True)]
    assert steps[2].describe() == (
        "managed policy AmazonSSMManagedInstanceCore: kept (role team-role was not made by runctl aws setup; "
        "it lets the instances read every SSM parameter: detach it yourself)")
    assert SSM_CORE in _attached(client, "team-role")


def _stubbed_iam(role_tags):
    """A real IAM client answering from botocore's Stubber (no network): the requests are
    checked against the service model, so their shapes are AWS's."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("iam", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    role = {"Path": "/", "RoleName": "runctl-instance", "RoleId": "AROAEXAMPLEEXAMPLE123",
            "Arn": "arn:aws-cn:iam::123456789012:role/runctl-instance", "CreateDate": "2026-11-29T10:00:00Z",
            "Tags": role_tags}
    stubber.add_response("get_role", {"Role": role}, {"RoleName": "runctl-instance"})
    stubber.add_response("put_role_policy", {}, {
        "RoleName": "runctl-instance", "PolicyName": "runctl-instance",
        "PolicyDocument": json.dumps(iam.instance_policy(BUCKET, account="123456789012", partition="aws-cn"))})
    stubber.add_response("list_attached_role_policies", {"AttachedPolicies": [
        {"PolicyName": "AmazonSSMManagedInstanceCore",
         "PolicyArn": "arn:aws-cn:iam::aws:policy/AmazonSSMManagedInstanceCore"}]}, {"RoleName": "runctl-instance"})
    return client, stubber


def test_the_detach_call_names_the_role_and_the_partitions_policy():
    client, stubber = _stubbed_iam([{"Key": "runctl:created", "Value": "2026-11-29T10:00:00Z"}])
    stubber.add_response("detach_role_policy", {}, {
        "RoleName": "runctl-instance", "PolicyArn": "arn:aws-cn:iam::aws:policy/AmazonSSMManagedInstanceCore"})
    stubber.add_response("get_instance_profile", {"InstanceProfile": {
        "Path": "/", "InstanceProfileName": "runctl-instance", "InstanceProfileId": "AIPAEXAMPLEEXAMPLE12",
        "Arn": "arn:aws-cn:iam::123456789012:instance-profile/runctl-instance", "CreateDate": "2026-11-29T10:00:00Z",
        "Roles": [{"Path": "/", "RoleName": "runctl-instance", "RoleId": "AROAEXAMPLEEXAMPLE123",
                   "Arn": "arn:aws-cn:iam::123456789012:role/runctl-instance",
                   "CreateDate": "2026-11-29T10:00:00Z"}]}}, {"InstanceProfileName": "runctl-instance"})
    with stubber:
        steps = ensure_instance_role(client, role="runctl-instance", bucket=BUCKET, account="123456789012",
                                     partition="aws-cn")
    stubber.assert_no_pending_responses()
    assert [s.action for s in steps] == ["exists", "update", "detach", "exists"]


def test_setup_without_permission_to_detach_says_which_permission():
    client, stubber = _stubbed_iam([{"Key": "runctl:created", "Value": "2026-11-29T10:00:00Z"}])
    stubber.add_client_error("detach_role_policy", "AccessDenied", "not authorized to perform: iam:DetachRolePolicy",
                             http_status_code=403)
    with stubber, pytest.raises(AccessDenied) as caught:
        ensure_instance_role(client, role="runctl-instance", bucket=BUCKET, account="123456789012",
                             partition="aws-cn")
    assert str(caught.value) == (
        "access denied: cannot detach AmazonSSMManagedInstanceCore from role runctl-instance (it lets the instances "
        "read every SSM parameter); the credentials need iam:DetachRolePolicy on role/runctl-instance "
        "(runctl aws iam-policy --for setup prints a policy)")


def test_a_bucket_in_another_region_gets_its_location(aws):
    s3 = aws.client("s3")
    ensure_bucket(s3, "runctl-eu-bucket", "eu-west-1")
    assert s3.get_bucket_location(Bucket="runctl-eu-bucket")["LocationConstraint"] == "eu-west-1"


def test_a_bucket_that_is_not_ours(aws):
    class Forbidden:
        def head_bucket(self, Bucket):  # noqa: N803
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"},
                               "ResponseMetadata": {"HTTPStatusCode": 403}}, "HeadBucket")

    with pytest.raises(CloudError, match="bucket 'taken' exists but this account cannot use it"):
        ensure_bucket(Forbidden(), "taken", "us-east-1")


def test_policies_are_least_privilege():
    instance = iam.instance_policy("b", account="1")
    resources = {json.dumps(s["Resource"]) for s in instance["Statement"] if s["Action"][0].startswith("s3:")}
    assert resources == {'"arn:aws:s3:::b"', '"arn:aws:s3:::b/*"'}
    instance_actions = [(a, s) for s in instance["Statement"]
                        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not any(a.startswith("iam:") for a, _ in instance_actions)
    # EC2: only deleting its job's launch template at the job's end, and only a runctl-tagged one.
    assert [(a, s["Condition"]) for a, s in instance_actions if a.startswith("ec2:")] == [
        ("ec2:DeleteLaunchTemplate", {"Null": {"aws:ResourceTag/runctl:created": "false"}})]
    cli = iam.cli_policy("b", account="1")
    by_sid = {s["Sid"]: s for s in cli["Statement"]}
    assert by_sid["ChangeOnlyRunctlResources"]["Condition"] == {"Null": {"aws:ResourceTag/runctl:created": "false"}}
    assert "ec2:TerminateInstances" in by_sid["ChangeOnlyRunctlResources"]["Action"]
    assert not any("ec2:TerminateInstances" in s["Action"] for sid, s in by_sid.items()
                   if sid != "ChangeOnlyRunctlResources")
    assert by_sid["PassInstanceRole"]["Resource"] == "arn:aws:iam::1:role/runctl-instance"
    assert all(s["Effect"] == "Allow" and s.get("Resource") for s in cli["Statement"])
    assert iam.setup_policy("b")["Statement"][0]["Resource"] == "arn:aws:s3:::b"


# A user's file as people write them: comments everywhere, a value with an escaped quote, a
# literal string, odd spacing, a multi-line array, tables setup has no business with.
USERS_FILE = """\
# Team settings -- reviewed by ops; keep this header.

[local]
grace_period   =   30      # odd spacing, kept as it is
stop_signal = 'SIGINT'     # a literal string

[aws]
# Where the GPUs are.
region = "a\\"b"   # quoted oddly on purpose
#  s3_bucket = "my-training-bucket"   # the template's example
instance_types = [
    "g5.xlarge",  # first choice
    'g4dn.xlarge',
]

[checkpoint]
keep_last_n = 3 # three is plenty
"""


def test_recording_keys_keeps_every_other_byte_of_the_users_file():
    out = set_config_keys(USERS_FILE, "aws", {"region": "us-east-1", "s3_bucket": 'runctl-"b"',
                                              "iam_instance_profile": "runctl-instance"}, source=".runctl.toml")
    data = tomllib.loads(out)
    assert data["aws"]["region"] == "us-east-1"
    assert data["aws"]["s3_bucket"] == 'runctl-"b"'
    assert data["aws"]["iam_instance_profile"] == "runctl-instance"
    assert data["aws"]["instance_types"] == ["g5.xlarge", "g4dn.xlarge"]
    assert data["local"] == {"grace_period": 30, "stop_signal": "SIGINT"} and data["checkpoint"] == {"keep_last_n": 3}
    before, after = USERS_FILE.splitlines(keepends=True), out.splitlines(keepends=True)
    region = before.index('region = "a\\"b"   # quoted oddly on purpose\n')
    assert after[region] == 'region = "us-east-1"   # quoted oddly on purpose\n'
    added = [line for line in after if line.startswith(("s3_bucket", "iam_instance_profile"))]
    assert added == ['s3_bucket = "runctl-\\"b\\""\n', 'iam_instance_profile = "runctl-instance"\n']
    assert [line for i, line in enumerate(after) if i != region and line not in added] == \
        [line for i, line in enumerate(before) if i != region]
    again = set_config_keys(out, "aws", {"region": "us-east-1"}, source=".runctl.toml")
    assert again == out


def test_recording_keys_in_a_file_without_the_table_adds_it():
    assert set_config_keys("", "aws", {"region": "x"}, source=".runctl.toml") == '[aws]\nregion = "x"\n'
    out = set_config_keys("[local]\ngrace_period = 5\n", "aws", {"region": "x"}, source=".runctl.toml")
    assert out == '[local]\ngrace_period = 5\n\n[aws]\nregion = "x"\n'
    out = set_config_keys('[aws.docker]\nx = 1\n', "aws", {"region": "x"}, source=".runctl.toml")
    assert tomllib.loads(out) == {"aws": {"region": "x", "docker": {"x": 1}}}


def test_recording_keys_refuses_a_file_it_cannot_read_as_toml():
    with pytest.raises(ConfigError, match=r"^proj/.runctl.toml:2: invalid TOML"):
        set_config_keys('[aws]\nregion = "a"b"\n', "aws", {"region": "x"}, source="proj/.runctl.toml")
    with pytest.raises(ConfigError, match=r"^proj/.runctl.toml: aws must be a table"):
        set_config_keys('aws = 5\n', "aws", {"region": "x"}, source="proj/.runctl.toml")
