"""What the EC2 adapters do with a refusal depends on its class (runctl.errors), not on its
words: a spot launch without CreateFleet permission falls back to RunInstances whether the
refusal is an API error or a fleet's per-pool error, and resources cleanup stops on a
permission problem but keeps a fleet that failed to delete otherwise."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from runctl.backends.aws.provision import Provisioner
from runctl.backends.aws.resources import _delete_fleet
from runctl.errors import AccessDenied, CredentialsError


def test_spot_without_create_fleet_permission_launches_with_run_instances(ec2_client, spec, wrappers):
    client = wrappers.Refuses(ec2_client, {"create_fleet"})
    info = Provisioner(client, region="us-east-1").create_instance(spec)
    assert info.lifecycle == "spot" and info.instance_type == "t3.small"
    assert ec2_client.describe_launch_templates()["LaunchTemplates"] == []  # the template is deleted again


def test_a_fleet_pool_refused_for_permission_falls_back_to_run_instances(ec2_client, spec, wrappers):
    """The fleet's per-pool error code goes through the same table: UnauthorizedOperation is
    AccessDenied there too (and here RunInstances is refused the same way, so it surfaces)."""
    client = wrappers.CapacityShortage(ec2_client, {"t3.small"}, code="UnauthorizedOperation")
    with pytest.raises(AccessDenied) as info:
        Provisioner(client, region="us-east-1").create_instance(spec)
    assert [name for name, _ in client.calls] == ["create_fleet", "run_instances"]
    assert (info.value.code, info.value.operation) == ("UnauthorizedOperation", "RunInstances")


class DeleteFleets:
    def __init__(self, code: str) -> None:
        self.code = code

    def delete_fleets(self, **_):
        raise ClientError({"Error": {"Code": self.code, "Message": "refused"}}, "DeleteFleets")


@pytest.mark.parametrize("code, raised", [("UnauthorizedOperation", AccessDenied),
                                          ("AuthFailure", CredentialsError)])
def test_cleanup_stops_on_a_permission_problem(code, raised):
    with pytest.raises(raised):
        _delete_fleet(DeleteFleets(code), "us-east-1", "fleet-1")


def test_cleanup_keeps_a_fleet_it_could_not_delete():
    assert _delete_fleet(DeleteFleets("InvalidFleetId.Malformed"), "us-east-1", "fleet-1") is False


def test_ecr_tells_a_missing_repository_or_tag_by_its_code():
    import boto3
    from botocore.stub import Stubber

    from runctl.backends.docker import Registry, ensure_ecr_repository, tag_in_registry

    ecr = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                                region_name="us-east-1").client("ecr")
    registry = Registry("123456789012.dkr.ecr.us-east-1.amazonaws.com")
    with Stubber(ecr) as stub:
        stub.add_client_error("describe_repositories", "RepositoryNotFoundException", "no such repository")
        stub.add_response("create_repository", {})
        stub.add_client_error("describe_images", "ImageNotFoundException", "no such image")
        stub.add_client_error("describe_images", "AccessDeniedException", "not allowed")
        assert ensure_ecr_repository(ecr, "runctl/job") is True
        assert tag_in_registry(registry, "runctl/job", "abc", ecr_client=ecr) is False
        with pytest.raises(AccessDenied) as denied:
            tag_in_registry(registry, "runctl/job", "abc", ecr_client=ecr)
    assert (denied.value.code, denied.value.operation) == ("AccessDeniedException", "DescribeImages")


def test_setup_tells_a_bucket_taken_by_another_account_from_one_of_ours():
    import boto3
    from botocore.stub import Stubber

    from runctl.backends.aws.setup import ensure_bucket
    from runctl.errors import CloudConflict

    s3 = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                               region_name="us-east-1").client("s3")
    with Stubber(s3) as stub:
        stub.add_client_error("head_bucket", "404", "", 404)
        stub.add_client_error("create_bucket", "BucketAlreadyOwnedByYou", "yours already", 409)
        stub.add_response("put_public_access_block", {})
        stub.add_client_error("head_bucket", "404", "", 404)
        stub.add_client_error("create_bucket", "BucketAlreadyExists", "taken", 409)
        assert [s.action for s in ensure_bucket(s3, "mine", "us-east-1")] == ["create"]
        with pytest.raises(CloudConflict, match="^bucket name 'theirs' is taken by another account") as info:
            ensure_bucket(s3, "theirs", "us-east-1")
    assert (info.value.code, info.value.operation) == ("BucketAlreadyExists", "CreateBucket")
