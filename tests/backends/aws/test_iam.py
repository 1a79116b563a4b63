"""runctl.backends.aws.iam: the instance policy allows reading a job's secrets by runctl's naming
convention (SSM parameters under /runctl/, Secrets Manager secrets named runctl/...), and no
others. The resource patterns are matched (IAM's * and ?) against the ARNs moto gives."""

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
    # runctl's own statements; AmazonSSMManagedInstanceCore, also on the role, allows every
    # parameter (docs/ENVIRONMENTS.md says so), so for SSM this is the intent, not the limit.
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
