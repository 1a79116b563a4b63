"""Fixtures for the EC2 side against moto (server mode, over HTTP), and the client wrappers
that stand in for what moto lacks: a capacity shortage, and reading a launch template
before runctl deletes it."""

from __future__ import annotations

import copy
import os

import pytest
from botocore.exceptions import ClientError

from runctl.backends.aws.launch import LaunchSpec

AL2023 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
SECRET_MARKERS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "aws_secret", "aws_access_key_id")


@pytest.fixture
def aws(moto_reset):
    from runctl.backends.aws.session import AwsSession

    return AwsSession("us-east-1", max_attempts=1)


@pytest.fixture
def ec2_client(aws):
    return aws.client("ec2")


@pytest.fixture(scope="session")
def _al2023_image(moto_server) -> str:
    """moto's AMI ids are fixed: look one up once (SSM's public parameters load slowly)."""
    import boto3

    return boto3.client("ssm", region_name="us-east-1").get_parameter(Name=AL2023)["Parameter"]["Value"]


@pytest.fixture
def image_id(aws, _al2023_image) -> str:
    return _al2023_image


@pytest.fixture
def spec(image_id) -> LaunchSpec:
    return LaunchSpec(image_id=image_id, instance_types=("t3.small", "t3.micro"), spot=True, job="job-1",
                      project="proj", user="tester", user_data="#!/bin/bash\necho runctl\n", idempotency_key="k")


def assert_no_credentials(text: str) -> None:
    for marker in (*SECRET_MARKERS, os.environ.get("AWS_SECRET_ACCESS_KEY") or "never-empty-marker"):
        assert marker not in text, f"{marker!r} found in the user data"


class Wrapper:
    """Delegates every call to the real (moto) client except those it defines."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)


class CapacityShortage(Wrapper):
    """Answers as AWS does when ``types`` have no capacity: per-pool errors from CreateFleet
    (the other pools still go to moto), InsufficientInstanceCapacity from RunInstances."""

    def __init__(self, client, types, code: str = "InsufficientInstanceCapacity") -> None:
        super().__init__(client)
        self.types, self.code, self.calls = set(types), code, []

    def create_fleet(self, **request):
        self.calls.append(("create_fleet", request))
        config = request["LaunchTemplateConfigs"][0]
        short = [o for o in config["Overrides"] if o["InstanceType"] in self.types]
        rest = [o for o in config["Overrides"] if o["InstanceType"] not in self.types]
        if rest:
            request = copy.deepcopy(request)
            request["LaunchTemplateConfigs"][0]["Overrides"] = rest
            response = self._client.create_fleet(**request)
        else:
            response = {"FleetId": "fleet-00000000-0000-0000-0000-000000000000", "Instances": []}
        response.setdefault("Errors", [])
        response["Errors"] += [{
            "LaunchTemplateAndOverrides": {"LaunchTemplateSpecification": config["LaunchTemplateSpecification"],
                                           "Overrides": o},
            "Lifecycle": request["TargetCapacitySpecification"]["DefaultTargetCapacityType"],
            "ErrorCode": self.code,
            "ErrorMessage": f"There is no Spot capacity available that matches your request ({o['InstanceType']}).",
        } for o in short]
        return response

    def run_instances(self, **request):
        self.calls.append(("run_instances", request))
        if request["InstanceType"] in self.types:
            raise ClientError({"Error": {"Code": self.code, "Message": (
                f"We currently do not have sufficient {request['InstanceType']} capacity in the Availability "
                "Zone you requested.")}}, "RunInstances")
        return self._client.run_instances(**request)


class TemplateReader(Wrapper):
    """Reads each launch template back from the server just before runctl deletes it."""

    def __init__(self, client) -> None:
        super().__init__(client)
        self.templates: list[dict] = []

    def delete_launch_template(self, **kwargs):
        versions = self._client.describe_launch_template_versions(LaunchTemplateId=kwargs["LaunchTemplateId"])
        self.templates += versions["LaunchTemplateVersions"]
        return self._client.delete_launch_template(**kwargs)


class Refuses(Wrapper):
    """Answers ``operations`` with an error code (e.g. UnauthorizedOperation)."""

    def __init__(self, client, operations, code: str = "UnauthorizedOperation") -> None:
        super().__init__(client)
        self._refused, self._code = set(operations), code

    def __getattr__(self, name):
        if name in self._refused:
            def refuse(**_):
                raise ClientError({"Error": {"Code": self._code, "Message": "You are not authorized"}}, name)
            return refuse
        return getattr(self._client, name)


@pytest.fixture
def wrappers():
    """The wrapper classes, for tests: ``wrappers.CapacityShortage(client, {...})``."""
    import types

    return types.SimpleNamespace(CapacityShortage=CapacityShortage, TemplateReader=TemplateReader, Refuses=Refuses,
                                 assert_no_credentials=assert_no_credentials)
