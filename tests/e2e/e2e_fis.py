"""Spot interruptions sent through AWS Fault Injection Service, for the real-AWS tests.

``Fis(aws, tag)`` makes an experiment role that only FIS may assume (for this account's
experiments in this region) with ``ec2:SendSpotInstanceInterruptions`` and
``ec2:DescribeInstances``; ``interrupt(instance_id)`` creates an experiment template whose one
action, ``aws:ec2:send-spot-instance-interruptions``, targets that instance by ARN, starts an
experiment and waits until the action runs (the notice is out); ``close()`` stops what still
runs and deletes the templates and the role. The request builders are pure functions.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from e2e_runctl import Aws

TAG_KEY = "runctl:e2e"  # on the FIS role, templates and experiments: the run that made them
FIS_ROLE_PATH = "/runctl-e2e/"  # every FIS role these tests make: `aws iam list-roles --path-prefix`
IAM_SETTLE_S = 15.0  # a new role is not usable everywhere at once
SPOT_ACTION = "aws:ec2:send-spot-instance-interruptions"
FIS_RUNNING = ("pending", "initiating", "running")  # experiment states before it ends


def fis_trust_policy(account: str, partition: str, region: str) -> dict:
    """FIS may take the role, for this account's experiments only (confused-deputy guard)."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "fis.amazonaws.com"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": account},
                      "ArnLike": {"aws:SourceArn": f"arn:{partition}:fis:{region}:{account}:experiment/*"}}}]}


def fis_role_policy(account: str, partition: str, region: str) -> dict:
    """What aws:ec2:send-spot-instance-interruptions needs: find the instance, interrupt it."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "SendSpotInterruptions", "Effect": "Allow", "Action": "ec2:SendSpotInstanceInterruptions",
         "Resource": f"arn:{partition}:ec2:{region}:{account}:instance/*"},
        {"Sid": "DescribeInstances", "Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"},
    ]}


def spot_interruption_template(*, instance_arn: str, role_arn: str, duration: str, tag: str) -> dict:
    """CreateExperimentTemplate's arguments: interrupt the one instance, ``duration``
    (ISO 8601, PT2M..PT15M) after the notice; no stop condition."""
    return {
        "description": f"runctl e2e {tag}: spot interruption of {instance_arn.rsplit('/', 1)[-1]}",
        "roleArn": role_arn,
        "stopConditions": [{"source": "none"}],
        "targets": {"SpotInstance": {"resourceType": "aws:ec2:spot-instance", "resourceArns": [instance_arn],
                                     "selectionMode": "ALL"}},
        "actions": {"interrupt": {"actionId": SPOT_ACTION, "description": "spot interruption notice, then reclaim",
                                  "parameters": {"durationBeforeInterruption": duration},
                                  "targets": {"SpotInstances": "SpotInstance"}}},
        "tags": {TAG_KEY: tag, "Name": f"runctl-e2e-{tag}"},
    }


class Fis:
    """Spot interruptions sent through AWS FIS, and the removal of what they needed."""

    POLICY_NAME = "send-spot-instance-interruptions"

    def __init__(self, aws: Aws, tag: str, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.aws, self.tag = aws, tag
        self.role_name = f"runctl-e2e-fis-{tag}"
        self.role_arn: str | None = None
        self.templates: list[str] = []
        self.experiments: list[str] = []
        self._sleep, self._clock = sleep, clock
        self._role_made_at = 0.0

    def make_role(self) -> str:
        """The experiment role (made once; IAM takes a few seconds to show it to FIS)."""
        if self.role_arn is None:
            iam = self.aws.client("iam")
            args = (self.aws.account, self.aws.partition, self.aws.region)
            role = iam.create_role(
                Path=FIS_ROLE_PATH, RoleName=self.role_name,
                AssumeRolePolicyDocument=json.dumps(fis_trust_policy(*args)),
                Description="runctl e2e tests: lets AWS FIS send spot interruptions (deleted by the test)",
                Tags=[{"Key": TAG_KEY, "Value": self.tag}])["Role"]
            self.role_arn = role["Arn"]
            self._role_made_at = self._clock()
            iam.put_role_policy(RoleName=self.role_name, PolicyName=self.POLICY_NAME,
                                PolicyDocument=json.dumps(fis_role_policy(*args)))
        return self.role_arn

    def instance_arn(self, instance_id: str) -> str:
        return f"arn:{self.aws.partition}:ec2:{self.aws.region}:{self.aws.account}:instance/{instance_id}"

    def interrupt(self, instance_id: str, *, duration: str = "PT2M", timeout: float = 300.0) -> dict:
        """Send a spot interruption to ``instance_id``: the notice at once, the reclaim
        ``duration`` later. Returns the experiment once its action runs (the notice is out)."""
        role_arn = self.make_role()
        settle = IAM_SETTLE_S - (self._clock() - self._role_made_at)
        if settle > 0:
            self._sleep(settle)
        fis = self.aws.client("fis")
        request = spot_interruption_template(instance_arn=self.instance_arn(instance_id), role_arn=role_arn,
                                             duration=duration, tag=self.tag)
        template = fis.create_experiment_template(**request)["experimentTemplate"]
        self.templates.append(template["id"])
        for attempt in range(3):
            experiment = fis.start_experiment(experimentTemplateId=template["id"],
                                              tags={TAG_KEY: self.tag})["experiment"]
            self.experiments.append(experiment["id"])
            state = self._wait(experiment["id"], lambda s: s not in ("pending", "initiating"), timeout)
            if state["status"] in ("running", "completed"):
                return {"id": experiment["id"], "template": template["id"], "state": state}
            reason = str(state.get("reason", ""))
            if attempt < 2 and ("role" in reason.lower() or "assume" in reason.lower()):
                self._sleep(30)  # the new role was not visible to FIS yet
                continue
            raise AssertionError(f"FIS experiment {experiment['id']} did not start: {state}")
        raise AssertionError("unreachable")

    def wait_done(self, experiment_id: str, timeout: float = 600.0) -> dict:
        """The experiment's final state (completed once the instance was reclaimed)."""
        return self._wait(experiment_id, lambda s: s not in FIS_RUNNING + ("stopping",), timeout)

    def _wait(self, experiment_id: str, done: Callable[[str], bool], timeout: float) -> dict:
        fis = self.aws.client("fis")
        deadline = self._clock() + timeout
        while True:
            state = fis.get_experiment(id=experiment_id)["experiment"]["state"]
            if done(state["status"]):
                return state
            if self._clock() >= deadline:
                raise AssertionError(f"FIS experiment {experiment_id} still {state} after {timeout:.0f}s")
            self._sleep(5)

    def close(self) -> list[str]:
        """Stop what still runs, delete the templates and the role; returns what failed."""
        from botocore.exceptions import ClientError

        problems: list[str] = []
        fis, iam = self.aws.client("fis"), self.aws.client("iam")

        def gone(exc: ClientError) -> bool:
            return exc.response.get("Error", {}).get("Code") in ("ResourceNotFoundException", "NoSuchEntity")

        for experiment_id in self.experiments:
            try:
                if fis.get_experiment(id=experiment_id)["experiment"]["state"]["status"] in FIS_RUNNING:
                    fis.stop_experiment(id=experiment_id)
            except ClientError as exc:
                if not gone(exc):
                    problems.append(f"stop FIS experiment {experiment_id}: {exc}")
        for template_id in self.templates:
            try:
                fis.delete_experiment_template(id=template_id)
            except ClientError as exc:
                if not gone(exc):
                    problems.append(f"delete FIS experiment template {template_id}: {exc}")
        if self.role_arn is not None:
            for what, call in (("delete the role policy", lambda: iam.delete_role_policy(
                    RoleName=self.role_name, PolicyName=self.POLICY_NAME)),
                               ("delete the role", lambda: iam.delete_role(RoleName=self.role_name))):
                try:
                    call()
                except ClientError as exc:
                    if not gone(exc):
                        problems.append(f"{what} {self.role_name}: {exc}")
        return problems
