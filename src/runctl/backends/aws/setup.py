"""``runctl aws setup``'s library side: the job bucket, the instance role and its profile,
and the keys it records in the user's .runctl.toml.

Each ``ensure_*`` looks first and creates only what is missing, so running setup again
changes nothing (the role's inline policy is rewritten to the current one). With
``dry_run`` nothing is created: the steps say what would be. Clients are passed in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from runctl.backends.aws import iam as policies
from runctl.backends.aws.launch import TAG_CREATED, utc_now_iso
from runctl.backends.aws.session import translate
from runctl.errors import AccessDenied, CloudConflict, CloudNotFound, ConfigError
from runctl.models import Record

log = logging.getLogger(__name__)

INLINE_POLICY = "runctl-instance"


@dataclass(frozen=True)
class Step(Record):
    resource: str  # "s3 bucket", "iam role", "iam role policy", "managed policy", "instance profile"
    name: str
    action: str  # "create", "exists", "update", "detach", "keep", "add role"
    done: bool  # False on a dry run
    note: str = ""  # why, for a step the user may not expect

    def describe(self) -> str:
        if self.action in ("exists", "keep"):
            said = "exists" if self.action == "exists" else "kept"
        else:
            past = {"create": "created", "update": "updated", "detach": "detached", "add role": "role added"}
            said = past[self.action] if self.done else f"would {self.action}"
        return f"{self.resource} {self.name}: {said}" + (f" ({self.note})" if self.note else "")


def ensure_bucket(s3, bucket: str, region: str, *, dry_run: bool = False) -> list[Step]:
    try:
        with translate(f"check bucket {bucket}", permission="s3:ListBucket"):
            s3.head_bucket(Bucket=bucket)
        return [Step("s3 bucket", bucket, "exists", True)]
    except AccessDenied as exc:
        raise AccessDenied(f"bucket {bucket!r} exists but this account cannot use it (it may belong to another "
                           "account; bucket names are global): choose another --bucket", code=exc.code,
                           operation=exc.operation) from exc
    except CloudNotFound:
        pass
    if dry_run:
        return [Step("s3 bucket", bucket, "create", False)]
    kwargs = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        with translate(f"create bucket {bucket}", permission="s3:CreateBucket"):
            s3.create_bucket(Bucket=bucket, **kwargs)
    except CloudConflict as exc:
        if exc.code == "BucketAlreadyExists":
            raise CloudConflict(f"bucket name {bucket!r} is taken by another account; choose another --bucket",
                                code=exc.code, operation=exc.operation) from exc
        if exc.code != "BucketAlreadyOwnedByYou":
            raise
    with translate(f"block public access to bucket {bucket}", permission="s3:PutBucketPublicAccessBlock"):
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})
    return [Step("s3 bucket", bucket, "create", True)]


def ensure_instance_role(iam, *, role: str, bucket: str, account: str, partition: str = "aws",
                         dry_run: bool = False) -> list[Step]:
    """The role EC2 instances run with (profile of the same name): job bucket, ECR pull, the
    job's secrets, the SSM agent, all in its inline policy (``iam.instance_policy``)."""
    steps: list[Step] = []
    done = not dry_run
    action = f"set up the instance role {role}"
    permission = "the IAM actions of runctl aws iam-policy --for setup"

    def found(call, key: str, **kwargs) -> dict[str, Any] | None:
        """``call``'s answer under ``key``, or None when the resource does not exist."""
        try:
            with translate(action, permission=permission):
                return call(**kwargs)[key]
        except CloudNotFound:
            return None

    with translate(action, permission=permission):
        existing = found(iam.get_role, "Role", RoleName=role)
        if existing is None:
            if done:
                iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(policies.trust_policy()),
                                Description="runctl training instances: job bucket, ECR pull, SSM",
                                Tags=[{"Key": TAG_CREATED, "Value": utc_now_iso()}])
            steps.append(Step("iam role", role, "create", done))
        else:
            steps.append(Step("iam role", role, "exists", True))
        document = json.dumps(policies.instance_policy(bucket, account=account, partition=partition))
        if done:
            iam.put_role_policy(RoleName=role, PolicyName=INLINE_POLICY, PolicyDocument=document)
        steps.append(Step("iam role policy", f"{role}/{INLINE_POLICY}", "update", done))
        if existing is not None:
            steps += _drop_ssm_managed_policy(iam, existing, partition=partition, dry_run=dry_run)
        profile = found(iam.get_instance_profile, "InstanceProfile", InstanceProfileName=role)
        if profile is None:
            if done:
                iam.create_instance_profile(InstanceProfileName=role)
            steps.append(Step("instance profile", role, "create", done))
            roles: list[str] = []
        else:
            steps.append(Step("instance profile", role, "exists", True))
            roles = [r["RoleName"] for r in profile.get("Roles", ())]
        if role not in roles:
            if done:
                iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
            steps.append(Step("instance profile", role, "add role", done))
    return steps


def _drop_ssm_managed_policy(iam, role: dict[str, Any], *, partition: str, dry_run: bool) -> list[Step]:
    """Detach AmazonSSMManagedInstanceCore, which an older runctl attached, from ``role``
    (GetRole's answer) when runctl made it (it carries the ``runctl:created`` tag): that
    policy lets the instances read every SSM parameter, and the inline policy now lets the
    SSM agent in without it. Another role's policies are its owner's: kept, and said."""
    name, arn = role["RoleName"], policies.ssm_managed_policy_arn(partition)
    # A role holds at most 20 managed policies: one page (up to 100) lists them all.
    attached = iam.list_attached_role_policies(RoleName=name).get("AttachedPolicies", ())
    if arn not in [p["PolicyArn"] for p in attached]:
        return []
    reads = "it lets the instances read every SSM parameter"
    if not any(tag.get("Key") == TAG_CREATED for tag in role.get("Tags", ())):
        return [Step("managed policy", policies.SSM_MANAGED_POLICY, "keep", True,
                     note=f"role {name} was not made by runctl aws setup; {reads}: detach it yourself")]
    if not dry_run:
        try:
            with translate(f"detach {policies.SSM_MANAGED_POLICY} from role {name} ({reads})",
                           permission=f"iam:DetachRolePolicy on role/{name}",
                           policy_hint="runctl aws iam-policy --for setup prints a policy"):
                iam.detach_role_policy(RoleName=name, PolicyArn=arn)
        except CloudNotFound:
            pass  # detached meanwhile: what was asked
    return [Step("managed policy", policies.SSM_MANAGED_POLICY, "detach", not dry_run,
                 note=f"{reads}; the role's own policy lets the SSM agent in")]


def set_config_keys(text: str, section: str, values: dict[str, Any], *, source: str) -> str:
    """``text``, a user's .runctl.toml, with each of ``values`` set under ``[section]``.

    Edited with tomlkit, which keeps what it is not asked to change byte for byte: comments,
    quoting, spacing, other tables. A key's value is replaced in place (its comment stays); a
    missing key goes at the end of the table; a missing table at the end of the file.
    ``source`` names the file in errors.
    """
    import tomlkit  # here, not at the top: `runctl --help` does not pay for it
    from tomlkit.exceptions import ParseError

    try:
        document = tomlkit.parse(text)
    except ParseError as exc:
        raise ConfigError(f"{source}:{exc.line}: invalid TOML: {exc}") from None
    table = document.get(section)
    if table is None:
        table = document[section] = tomlkit.table()
    elif not isinstance(table, dict):
        raise ConfigError(f"{source}: {section} must be a table ([{section}]), got {type(table.unwrap()).__name__}")
    for key, value in values.items():
        table[key] = value
    return tomlkit.dumps(document)
