"""The one translation of botocore errors (runctl.errors.aws): the class says what kind of
refusal it was, ``code`` and ``operation`` say which, for errors built by hand and for real
client calls answered by botocore's Stubber; the S3 store gets the same in its own terms."""

from __future__ import annotations

import boto3
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ProfileNotFound
from botocore.stub import Stubber

from runctl.backends.aws.ec2 import Ec2
from runctl.errors import (
    AccessDenied,
    CloudConflict,
    CloudError,
    CloudNotFound,
    CredentialsError,
    NoCapacity,
    NotFoundError,
    PreconditionFailed,
    StoreError,
    Throttled,
)
from runctl.errors.aws import cloud_error, error_class, store_error, translate
from runctl.store.s3 import S3Store

SECRET = "wJalrXUtnFEMI-never-in-a-message"


def client_error(code: str, message: str = "m", status: int = 400, operation: str = "RunInstances") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@pytest.mark.parametrize("code, status, kind", [
    ("InvalidInstanceID.NotFound", 400, CloudNotFound),
    ("ParameterNotFound", 400, CloudNotFound),
    ("RepositoryNotFoundException", 400, CloudNotFound),
    ("NoSuchKey", 404, CloudNotFound),
    ("NoSuchEntity", 404, CloudNotFound),
    ("InvocationDoesNotExist", 400, CloudNotFound),
    ("404", 404, CloudNotFound),  # a HEAD request: no body, the status is the code
    ("PreconditionFailed", 412, CloudConflict),
    ("ConditionalRequestConflict", 409, CloudConflict),
    ("InvalidLaunchTemplateName.AlreadyExistsException", 400, CloudConflict),
    ("BucketAlreadyOwnedByYou", 409, CloudConflict),
    ("UnauthorizedOperation", 403, AccessDenied),
    ("AccessDeniedException", 400, AccessDenied),
    ("403", 403, AccessDenied),
    ("AuthFailure", 401, CredentialsError),
    ("ExpiredToken", 400, CredentialsError),
    ("SignatureDoesNotMatch", 403, CredentialsError),  # a 403, but the credentials are wrong
    ("RequestLimitExceeded", 503, Throttled),
    ("SlowDown", 503, Throttled),
    ("InsufficientInstanceCapacity", 500, NoCapacity),
    ("Unsupported", 400, NoCapacity),
    ("InvalidParameterValue", 400, CloudError),
    ("RequestTimeTooSkewed", 403, CloudError),  # a code of its own: the status does not decide
])
def test_the_code_decides_the_class(code, status, kind):
    assert error_class(code, status) is kind
    error = cloud_error(client_error(code, status=status), "launch")
    assert type(error) is kind
    assert (error.code, error.operation, error.exit_code) == (code, "RunInstances", 3)
    assert "\n" not in str(error)


def test_a_bare_status_decides_only_without_a_code():
    assert error_class("", 404) is CloudNotFound
    assert error_class("", 412) is CloudConflict
    assert error_class("InternalError", 404) is CloudError


@pytest.mark.parametrize("exc, kind, expected", [
    (client_error("InvalidInstanceID.NotFound", "The instance ID 'i-12345678' does not exist",
                  operation="DescribeInstances"),
     CloudNotFound, "instance i-12345678 not found in eu-west-1"),
    (client_error("UnauthorizedOperation", "You are not authorized. Encoded authorization failure message: xyz",
                  403), AccessDenied,
     "access denied: cannot launch; the credentials need ec2:RunInstances (runctl aws iam-policy --for cli "
     "prints a policy)"),
    (client_error("ExpiredToken"), CredentialsError,
     "AWS rejected the credentials (ExpiredToken) while trying to launch; check AWS_PROFILE / the access key and "
     "its session token"),
    (client_error("InsufficientInstanceCapacity", "We currently do not have sufficient t3.micro capacity\nmore"),
     NoCapacity, "cannot launch: InsufficientInstanceCapacity: We currently do not have sufficient t3.micro capacity"),
    (NoCredentialsError(), CredentialsError,
     "no AWS credentials found; configure them (aws configure, AWS_PROFILE or environment variables)"),
    (ProfileNotFound(profile="nope"), CredentialsError,
     "AWS profile 'nope' not found; fix AWS_PROFILE (aws configure list-profiles shows the profiles there are)"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:9/bucket/key"), CloudError,
     "cannot reach the AWS endpoint http://127.0.0.1:9 to launch"),
])
def test_one_line_naming_what_failed(exc, kind, expected):
    error = cloud_error(exc, "launch", permission="ec2:RunInstances", instance_id="i-12345678", region="eu-west-1")
    assert type(error) is kind and str(error) == expected
    assert "xyz" not in str(error)


def test_errors_without_an_answer_carry_no_code():
    error = cloud_error(NoCredentialsError(), "launch")
    assert (error.code, error.operation) == ("", "")


def test_boto3_transfer_wrappers_are_seen_through():
    """S3UploadFailedError flattens the ClientError into a string; the original is its context."""
    try:
        try:
            raise client_error("AccessDenied", "Access Denied", 403, "PutObject")
        except ClientError as inner:
            raise S3UploadFailedError(f"Failed to upload: {inner}") from None
    except S3UploadFailedError as exc:
        wrapped = exc
    error = cloud_error(wrapped, "upload to s3://b/k")
    assert type(error) is AccessDenied and (error.code, error.operation) == ("AccessDenied", "PutObject")


def test_translate_raises_from_the_botocore_error():
    with pytest.raises(Throttled) as info:
        with translate("list instances", region="us-east-1"):
            raise client_error("RequestLimitExceeded", operation="DescribeInstances")
    assert str(info.value) == ("AWS is throttling requests (RequestLimitExceeded) while trying to list instances; "
                               "retry in a minute")
    assert info.value.operation == "DescribeInstances"
    assert isinstance(info.value.__cause__, ClientError)


@pytest.mark.parametrize("cloud, store", [
    (CloudNotFound("x", code="NoSuchKey", operation="GetObject"), NotFoundError),
    (CloudConflict("x", code="PreconditionFailed", operation="PutObject"), PreconditionFailed),
    (AccessDenied("x", code="AccessDenied", operation="GetObject"), StoreError),
    (Throttled("x", code="SlowDown", operation="PutObject"), StoreError),
])
def test_the_store_gets_the_same_error_in_its_terms(cloud, store):
    error = store_error(cloud)
    assert type(error) is store
    assert (error.message, error.code, error.operation) == ("x", cloud.code, cloud.operation)


# -- real client calls, answered by botocore's Stubber ---------------------------------------

def _session():
    return boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET,
                                 region_name="us-east-1")


def test_stubbed_ec2_calls():
    client = _session().client("ec2")
    with Stubber(client) as stub:
        stub.add_client_error("describe_instances", "InvalidInstanceID.NotFound", "The instance ID does not exist")
        stub.add_client_error("run_instances", "InsufficientInstanceCapacity", "no t3.micro capacity", 500)
        stub.add_client_error("terminate_instances", "UnauthorizedOperation", "You are not authorized", 403)

        with pytest.raises(CloudNotFound) as found:
            Ec2(client, region="us-east-1").describe("i-0123456789abcdef0")
        with pytest.raises(NoCapacity) as capacity:
            with translate("launch a t3.micro", region="us-east-1"):
                client.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
        with pytest.raises(AccessDenied) as denied:
            with translate("terminate i-0123456789abcdef0", permission="ec2:TerminateInstances"):
                client.terminate_instances(InstanceIds=["i-0123456789abcdef0"])
    assert (found.value.code, found.value.operation) == ("InvalidInstanceID.NotFound", "DescribeInstances")
    assert str(found.value) == "instance i-0123456789abcdef0 not found in us-east-1"
    assert (capacity.value.code, capacity.value.operation) == ("InsufficientInstanceCapacity", "RunInstances")
    assert (denied.value.code, denied.value.operation) == ("UnauthorizedOperation", "TerminateInstances")
    for error in (found.value, capacity.value, denied.value):
        assert SECRET not in str(error) and "AKIDEXAMPLE" not in str(error)


class _OneClient:
    """A boto3 Session stand-in that hands the S3 store an existing (stubbed) client."""

    def __init__(self, client) -> None:
        self._client = client

    def client(self, service, **_):
        return self._client


def test_stubbed_s3_store_calls():
    client = _session().client("s3")
    store = S3Store("bucket", "p", session=_OneClient(client))
    with Stubber(client) as stub:
        stub.add_client_error("get_object", "NoSuchKey", "The specified key does not exist.", 404)
        stub.add_client_error("put_object", "PreconditionFailed", "At least one of the pre-conditions failed", 412)
        stub.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
        stub.add_client_error("get_object", "NoSuchBucket", "The specified bucket does not exist", 404)

        with pytest.raises(NotFoundError) as missing:
            store.read("jobs/j/job.json")
        with pytest.raises(PreconditionFailed) as lost:
            store.write("jobs/j/lease.json", b"{}", if_none_match=True)
        with pytest.raises(StoreError) as denied:
            store.read("jobs/j/job.json")
        with pytest.raises(StoreError) as no_bucket:
            store.read("jobs/j/job.json")
    assert str(missing.value) == "s3://bucket/p/jobs/j/job.json does not exist"
    assert (missing.value.code, missing.value.operation) == ("NoSuchKey", "GetObject")
    assert (lost.value.code, lost.value.operation) == ("PreconditionFailed", "PutObject")
    assert type(denied.value) is StoreError and (denied.value.code, denied.value.operation) == ("AccessDenied",
                                                                                              "GetObject")
    assert str(denied.value) == ("access denied: cannot read s3://bucket/p/jobs/j/job.json; the credentials need "
                                 "s3:GetObject")  # no policy named: the store runs on instances too
    assert type(no_bucket.value) is StoreError and str(no_bucket.value).startswith("bucket 'bucket' does not exist")
    for error in (missing.value, lost.value, denied.value, no_bucket.value):
        assert SECRET not in str(error) and "AKIDEXAMPLE" not in str(error)
