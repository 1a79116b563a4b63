"""Least-privilege IAM policies for runctl. Pure: each function returns a policy document.

- ``instance_policy``: everything the instance role needs: the job bucket (list, read,
  write, delete), pulling images from ECR, and ending a job's Auto Scaling group from
  inside (leave it, lower it, delete it and its launch template), only for groups and
  templates tagged ``runctl:created``; reading a job's secrets (``--secret``) from SSM
  parameters under ``/runctl/`` and Secrets Manager secrets named ``runctl/...`` (see
  ``SECRET_PARAMETERS`` and ``SECRET_NAMES``); and letting the SSM agent in for Run Command
  and Session Manager (``SSM_AGENT_ACTIONS``), in place of AmazonSSMManagedInstanceCore.
- ``cli_policy``: what the person running runctl needs day to day: launch tagged instances,
  fleets and job groups, change only resources tagged ``runctl:created``, pass the instance
  role to EC2, run commands through SSM, use the job bucket.
- ``setup_policy``: what ``runctl aws setup`` needs once (create the bucket, role, profile;
  detach AmazonSSMManagedInstanceCore from a role an older runctl made).
"""

from __future__ import annotations

from typing import Any

from runctl.backends.aws.launch import TAG_CREATED

DEFAULT_ROLE = "runctl-instance"
#: The AWS managed policy an older ``runctl aws setup`` attached to the instance role. It
#: allows ssm:GetParameter(s) on every parameter of the account (and GetDocument on every
#: document), so ``aws setup`` now detaches it from runctl's own role: the inline policy's
#: ``SSM_AGENT_ACTIONS`` let the agent in without it.
SSM_MANAGED_POLICY = "AmazonSSMManagedInstanceCore"
VERSION = "2012-10-17"


def ssm_managed_policy_arn(partition: str = "aws") -> str:
    return f"arn:{partition}:iam::aws:policy/{SSM_MANAGED_POLICY}"


def default_bucket(account: str, region: str) -> str:
    return f"runctl-{account}-{region}"


def trust_policy() -> dict[str, Any]:
    """Lets EC2 instances take the role."""
    return {"Version": VERSION, "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def _bucket_statements(bucket: str, partition: str) -> list[dict[str, Any]]:
    return [
        {"Sid": "JobBucketList", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": f"arn:{partition}:s3:::{bucket}"},
        {"Sid": "JobBucketObjects", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
         "Resource": f"arn:{partition}:s3:::{bucket}/*"},
    ]


#: What an agent does to its job's group: leave it at a notice (the group replaces it), and
#: at the job's end lower it, leave it and delete it. Auto Scaling has no condition key for
#: the calling instance, so the scope is runctl's groups (tagged), not one job's.
GROUP_ACTIONS = ("autoscaling:DetachInstances", "autoscaling:UpdateAutoScalingGroup",
                 "autoscaling:DeleteAutoScalingGroup")


def _runctl_tagged(prefix: str) -> dict[str, Any]:
    """The resource carries the ``runctl:created`` tag."""
    return {"Null": {f"{prefix}:ResourceTag/{TAG_CREATED}": "false"}}


#: The secrets an instance may read for its jobs' ``--secret NAME=REF``, by a naming convention
#: (as the role's groups are ``runctl-*``): SSM parameters under /runctl/ and Secrets Manager
#: secrets whose names start with runctl/. The role reads no other parameter or secret (the
#: SSM agent's actions below read none; see docs/ENVIRONMENTS.md). No kms:Decrypt: the AWS
#: managed keys (aws/ssm, aws/secretsmanager) let every principal of the account decrypt
#: through their service; a secret under a customer managed key needs kms:Decrypt on that
#: key, granted by its owner.
SECRET_PARAMETERS = "/runctl/*"
SECRET_NAMES = "runctl/*"


def _secret_statements(account: str, partition: str) -> list[dict[str, Any]]:
    return [
        {"Sid": "ReadRunctlParameters", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:GetParameters"],
         "Resource": f"arn:{partition}:ssm:*:{account}:parameter{SECRET_PARAMETERS}"},
        {"Sid": "ReadRunctlSecrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
         "Resource": f"arn:{partition}:secretsmanager:*:{account}:secret:{SECRET_NAMES}"},
    ]


#: What the SSM agent calls, per AWS's instance permissions for Systems Manager (the actions
#: of AmazonSSMManagedInstanceCore without its reads of parameters, documents, associations,
#: patches and inventory): register and report in, take Run Command's commands and send
#: their output (ec2messages, the Message Delivery Service), and open the control and data
#: channels of Session Manager, through which agents 3.3.40 and later also take commands
#: (ssmmessages). None of them names a resource: AWS documents them on "*".
SSM_AGENT_ACTIONS = {
    "SsmAgentRegister": ("ssm:UpdateInstanceInformation",),
    "SsmAgentRunCommand": ("ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage",
                           "ec2messages:FailMessage", "ec2messages:GetEndpoint", "ec2messages:GetMessages",
                           "ec2messages:SendReply"),
    "SsmAgentChannels": ("ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
                         "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"),
}


def _ssm_agent_statements() -> list[dict[str, Any]]:
    return [{"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": "*"}
            for sid, actions in SSM_AGENT_ACTIONS.items()]


def instance_policy(bucket: str, account: str = "*", partition: str = "aws") -> dict[str, Any]:
    return {"Version": VERSION, "Statement": [
        *_bucket_statements(bucket, partition),
        {"Sid": "EndRunctlJobGroups", "Effect": "Allow", "Action": list(GROUP_ACTIONS),
         "Resource": f"arn:{partition}:autoscaling:*:{account}:autoScalingGroup:*:autoScalingGroupName/runctl-*",
         "Condition": _runctl_tagged("autoscaling")},
        {"Sid": "DeleteRunctlLaunchTemplates", "Effect": "Allow", "Action": "ec2:DeleteLaunchTemplate",
         "Resource": f"arn:{partition}:ec2:*:{account}:launch-template/*", "Condition": _runctl_tagged("aws")},
        {"Sid": "ReadGroups", "Effect": "Allow", "Action": "autoscaling:DescribeAutoScalingGroups", "Resource": "*"},
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "EcrPull", "Effect": "Allow",
         "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
         "Resource": f"arn:{partition}:ecr:*:{account}:repository/*"},
        *_secret_statements(account, partition),
        *_ssm_agent_statements(),
    ]}


def cli_policy(bucket: str, account: str = "*", role: str = DEFAULT_ROLE, partition: str = "aws") -> dict[str, Any]:
    tagged = _runctl_tagged("aws")
    return {"Version": VERSION, "Statement": [
        {"Sid": "Launch", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"]},
        {"Sid": "CreateJobGroups", "Effect": "Allow", "Resource": "*",
         "Action": ["autoscaling:CreateAutoScalingGroup", "autoscaling:CreateOrUpdateTags"],
         "Condition": {"Null": {f"aws:RequestTag/{TAG_CREATED}": "false"}}},
        {"Sid": "ChangeOnlyRunctlGroups", "Effect": "Allow", "Resource": "*", "Action": list(GROUP_ACTIONS),
         "Condition": _runctl_tagged("autoscaling")},
        {"Sid": "ReadGroups", "Effect": "Allow", "Resource": "*",
         "Action": ["autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeScalingActivities"]},
        {"Sid": "TagOnLaunch", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
         "Condition": {"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]}}},
        {"Sid": "ChangeOnlyRunctlResources", "Effect": "Allow", "Resource": "*", "Condition": tagged,
         "Action": ["ec2:StopInstances", "ec2:StartInstances", "ec2:TerminateInstances",
                    "ec2:DeleteLaunchTemplate", "ec2:DeleteFleets"]},
        {"Sid": "Read", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeImages",
                    "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions", "ec2:DescribeFleets",
                    "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets", "ec2:DescribeRegions",
                    "ssm:DescribeInstanceInformation", "ssm:GetCommandInvocation", "pricing:GetProducts"]},
        {"Sid": "PublicAmiParameters", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:GetParameters"],
         "Resource": f"arn:{partition}:ssm:*::parameter/aws/service/*"},
        {"Sid": "RunCommandOnRunctlInstances", "Effect": "Allow", "Action": "ssm:SendCommand",
         "Resource": f"arn:{partition}:ec2:*:{account}:instance/*",
         "Condition": {"Null": {f"ssm:resourceTag/{TAG_CREATED}": "false"}}},
        {"Sid": "RunShellScriptDocument", "Effect": "Allow", "Action": "ssm:SendCommand",
         "Resource": f"arn:{partition}:ssm:*::document/AWS-RunShellScript"},
        {"Sid": "PassInstanceRole", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": f"arn:{partition}:iam::{account}:role/{role}",
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        {"Sid": "FleetServiceRoles", "Effect": "Allow", "Action": "iam:CreateServiceLinkedRole", "Resource": "*",
         "Condition": {"StringEquals": {"iam:AWSServiceName": ["spot.amazonaws.com", "ec2fleet.amazonaws.com",
                                                               "autoscaling.amazonaws.com"]}}},
        *_bucket_statements(bucket, partition),
    ]}


def setup_policy(bucket: str, account: str = "*", role: str = DEFAULT_ROLE, partition: str = "aws") -> dict[str, Any]:
    return {"Version": VERSION, "Statement": [
        {"Sid": "JobBucket", "Effect": "Allow", "Resource": f"arn:{partition}:s3:::{bucket}",
         "Action": ["s3:CreateBucket", "s3:ListBucket", "s3:PutBucketPublicAccessBlock"]},
        {"Sid": "InstanceRole", "Effect": "Allow",
         "Resource": [f"arn:{partition}:iam::{account}:role/{role}",
                      f"arn:{partition}:iam::{account}:instance-profile/{role}"],
         "Action": ["iam:GetRole", "iam:CreateRole", "iam:TagRole", "iam:PutRolePolicy",
                    "iam:ListAttachedRolePolicies", "iam:GetInstanceProfile", "iam:CreateInstanceProfile",
                    "iam:AddRoleToInstanceProfile"]},
        # Only AmazonSSMManagedInstanceCore, which an older runctl attached: nothing else.
        {"Sid": "DetachOldSsmPolicy", "Effect": "Allow", "Action": "iam:DetachRolePolicy",
         "Resource": f"arn:{partition}:iam::{account}:role/{role}",
         "Condition": {"ArnEquals": {"iam:PolicyARN": ssm_managed_policy_arn(partition)}}},
    ]}


POLICIES = {"cli": cli_policy, "instance": instance_policy, "setup": setup_policy}
