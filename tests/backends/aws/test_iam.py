"""runctl.backends.aws.iam: the instance policy allows reading a job's secrets by runctl's naming
convention (SSM parameters under /runctl/, Secrets Manager secrets named runctl/...), and no
others; it lets the SSM agent in without reading any parameter or document. The resource
patterns are matched (IAM's * and ?) against the ARNs moto gives: moto does not evaluate IAM
policies, so what a role may do is read from the documents here."""

from __future__ import annotations

import fnmatch

import boto3

from runctl.backends.aws import iam


def _allowed(policy: dict, action: str, arn: str) -> bool:
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if action in actions and "Condition" not in statement and any(
                fnmatch.fnmatchcase(arn, pattern) for pattern in resources):
            return True
    return False


def test_the_instance_policy_reads_runctl_secrets_and_no_others(moto_reset):
    # The whole instance policy: the role has no managed policy (aws setup detaches the one an
    # older runctl attached), so this is the limit.
    ssm = boto3.client("ssm", region_name="eu-west-1")
    secretsmanager = boto3.client("secretsmanager", region_name="eu-west-1")
    arns = {}
    for name in ("/runctl/wandb", "/runctl/team/hf-token", "/other/token", "/runctlx/token"):
        ssm.put_parameter(Name=name, Value="v", Type="SecureString")
        arns[name] = ssm.get_parameter(Name=name)["Parameter"]["ARN"]
    for name in ("runctl/wandb", "other/token", "runctl-token"):
        arns[name] = secretsmanager.create_secret(Name=name, SecretString="v")["ARN"]
    account = arns["/runctl/wandb"].split(":")[4]
    policy = iam.instance_policy("bucket", account=account)

    readable = {name for name, arn in arns.items()
                if _allowed(policy, "ssm:GetParameter", arn) or _allowed(policy, "secretsmanager:GetSecretValue", arn)}
    assert readable == {"/runctl/wandb", "/runctl/team/hf-token", "runctl/wandb"}
    # Any account's role reads its own only: the default policy (account "*") matches too.
    assert _allowed(iam.instance_policy("bucket"), "ssm:GetParameter", arns["/runctl/wandb"])
    assert not _allowed(iam.instance_policy("bucket", account="111111111111"), "ssm:GetParameter",
                        arns["/runctl/wandb"])


def test_no_kms_permission_is_granted():
    # The AWS managed keys decrypt for every principal of the account through SSM and
    # Secrets Manager; a customer managed key's owner grants kms:Decrypt (docs/ENVIRONMENTS.md).
    actions = [a for s in iam.instance_policy("bucket")["Statement"]
               for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])]
    assert not [a for a in actions if a.startswith("kms:")]


def _actions(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def _resources(statement: dict) -> list[str]:
    return statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]


def test_the_instance_policy_reads_no_parameter_or_document_on_a_wildcard():
    # AmazonSSMManagedInstanceCore allowed ssm:GetParameter(s) and ssm:GetDocument on "*".
    for partition, account in (("aws", "*"), ("aws-cn", "111111111111")):
        for statement in iam.instance_policy("bucket", account=account, partition=partition)["Statement"]:
            ssm_reads = [a for a in _actions(statement) if a.startswith(("ssm:Get", "ssm:Describe", "ssm:List"))]
            assert not [a for a in _actions(statement) if a.endswith("*")], statement
            if ssm_reads:
                assert statement["Sid"] == "ReadRunctlParameters"
                assert _resources(statement) == [f"arn:{partition}:ssm:*:{account}:parameter/runctl/*"]
            if "*" in _resources(statement):
                assert not [a for a in _actions(statement) if a.startswith(("ssm:Get", "secretsmanager:"))]


def test_the_instance_policy_lets_the_ssm_agent_in_for_run_command_and_sessions():
    # The SSM agent's calls, per AWS's instance permissions for Systems Manager: register,
    # Run Command over ec2messages, Session Manager's (and newer agents' command) channels.
    by_sid = {s["Sid"]: s for s in iam.instance_policy("bucket", account="1")["Statement"]}
    assert set(by_sid["SsmAgentRegister"]["Action"]) == {"ssm:UpdateInstanceInformation"}
    assert set(by_sid["SsmAgentRunCommand"]["Action"]) == {
        "ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage",
        "ec2messages:GetEndpoint", "ec2messages:GetMessages", "ec2messages:SendReply"}
    assert set(by_sid["SsmAgentChannels"]["Action"]) == {
        "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel"}
    for sid in ("SsmAgentRegister", "SsmAgentRunCommand", "SsmAgentChannels"):
        assert by_sid[sid]["Effect"] == "Allow" and by_sid[sid]["Resource"] == "*"
    ssm_actions = {a for s in by_sid.values() for a in _actions(s) if a.startswith("ssm:")}
    assert ssm_actions == {"ssm:UpdateInstanceInformation", "ssm:GetParameter", "ssm:GetParameters"}


def test_the_setup_policy_detaches_only_the_old_ssm_policy_and_attaches_nothing():
    statements = iam.setup_policy("bucket", account="1", role="r", partition="aws-cn")["Statement"]
    actions = [a for s in statements for a in _actions(s)]
    assert "iam:AttachRolePolicy" not in actions
    (detach,) = [s for s in statements if "iam:DetachRolePolicy" in _actions(s)]
    assert _actions(detach) == ["iam:DetachRolePolicy"] and detach["Resource"] == "arn:aws-cn:iam::1:role/r"
    assert detach["Condition"] == {
        "ArnEquals": {"iam:PolicyARN": "arn:aws-cn:iam::aws:policy/AmazonSSMManagedInstanceCore"}}
