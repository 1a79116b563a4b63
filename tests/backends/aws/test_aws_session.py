"""The session's region check and the translation of botocore errors to one line."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from runctl.backends.aws.session import AwsSession, check_instance_id, check_region, cloud_error, translate
from runctl.errors import CloudError, UsageError


def client_error(code: str, message: str = "m", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "RunInstances")


def test_unknown_region_is_a_usage_error_before_any_request():
    with pytest.raises(UsageError, match=r"^unknown region 'xx-1'"):
        AwsSession("xx-1")
    with pytest.raises(UsageError, match=r"did you mean 'us-east-1'"):
        check_region("us-east1")
    assert check_region("eu-west-1") == "eu-west-1"
    assert check_region("cn-north-1") == "cn-north-1"  # other partitions count too


def test_instance_ids_are_checked_for_shape():
    assert check_instance_id("i-0123456789abcdef0") == "i-0123456789abcdef0"
    assert check_instance_id("i-12345678") == "i-12345678"
    with pytest.raises(UsageError, match="not an EC2 instance id"):
        check_instance_id("i-xyz")


@pytest.mark.parametrize("exc, expected", [
    (NoCredentialsError(), "no AWS credentials found; configure them"),
    (client_error("AuthFailure"), "AWS rejected the credentials (AuthFailure) while trying to launch"),
    (client_error("UnauthorizedOperation", "You are not authorized. Encoded authorization failure message: xyz"),
     "access denied: cannot launch; the credentials need ec2:RunInstances (runctl aws iam-policy --for cli"),
    (client_error("RequestLimitExceeded"), "AWS is throttling requests (RequestLimitExceeded)"),
    (client_error("InvalidParameterValue", "Value (x) for parameter y is invalid\nmore"),
     "cannot launch: InvalidParameterValue: Value (x) for parameter y is invalid"),
    (client_error("500", "<!doctype html>\n<title>500 Internal Server Error</title>", 500),
     "cannot launch: RunInstances answered HTTP 500 (an AWS emulator may not implement it)"),
    (EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"),
     "cannot reach the AWS endpoint https://ec2.us-east-1.amazonaws.com/ to launch"),
])
def test_cloud_errors_are_one_line(exc, expected):
    error = cloud_error(exc, "launch", permission="ec2:RunInstances")
    assert isinstance(error, CloudError) and error.exit_code == 3
    assert str(error).startswith(expected)
    assert "\n" not in str(error) and "xyz" not in str(error)


def test_unknown_instance_and_translate():
    error = cloud_error(client_error("InvalidInstanceID.NotFound"), "describe", instance_id="i-12345678",
                        region="eu-west-1")
    assert str(error) == "instance i-12345678 not found in eu-west-1"
    with pytest.raises(CloudError, match="^no AWS credentials") as info:
        with translate("list"):
            raise NoCredentialsError()
    assert isinstance(info.value.__cause__, NoCredentialsError)
