"""runctl.agent.secrets: references read against moto's SSM Parameter Store and Secrets
Manager (the moto server of the fake cloud plays both); what moto does not refuse (access
denied) shown with botocore's Stubber, in the shape AWS answers."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from runctl.agent.secrets import SecretResolver, resolve
from runctl.errors import AccessDenied, CloudError, CloudNotFound, CredentialsError

VALUE = "s3cr3t-value-0f-the-test"


@pytest.fixture
def ssm(moto_reset):
    return boto3.client("ssm", region_name="us-east-1")


@pytest.fixture
def secretsmanager(moto_reset):
    return boto3.client("secretsmanager", region_name="us-east-1")


def test_a_securestring_parameter_is_read_decrypted(ssm):
    ssm.put_parameter(Name="/runctl/token", Value=VALUE, Type="SecureString")
    ssm.put_parameter(Name="plain", Value="not secret", Type="String")
    # Without WithDecryption moto (as AWS) answers the ciphertext's stand-in, not the value.
    assert ssm.get_parameter(Name="/runctl/token")["Parameter"]["Value"] != VALUE
    assert resolve({"TOKEN": "ssm:/runctl/token", "PLAIN": "ssm:plain"}) == {"TOKEN": VALUE, "PLAIN": "not secret"}


def test_a_parameter_by_arn_is_read_in_the_region_its_arn_names(moto_reset):
    west = boto3.client("ssm", region_name="eu-west-1")
    west.put_parameter(Name="/runctl/token", Value=VALUE, Type="SecureString")
    arn = west.get_parameter(Name="/runctl/token")["Parameter"]["ARN"]
    assert ":eu-west-1:" in arn
    assert resolve({"TOKEN": f"ssm:{arn}"}) == {"TOKEN": VALUE}


def test_a_secrets_manager_secret_is_read_by_name_and_by_arn(secretsmanager):
    arn = secretsmanager.create_secret(Name="runctl/token", SecretString=VALUE)["ARN"]
    assert resolve({"A": "secretsmanager:runctl/token", "B": f"secretsmanager:{arn}"}) == {"A": VALUE, "B": VALUE}


def test_a_missing_parameter_or_secret_names_the_variable_and_its_reference(ssm, secretsmanager):
    with pytest.raises(CloudNotFound) as caught:
        resolve({"TOKEN": "ssm:/runctl/missing"})
    assert str(caught.value).startswith("cannot read secret TOKEN (ssm:/runctl/missing): ParameterNotFound")
    with pytest.raises(CloudNotFound, match=r"^cannot read secret KEY \(secretsmanager:runctl/missing\)"):
        resolve({"KEY": "secretsmanager:runctl/missing"})
    assert caught.value.exit_code == 3


def test_a_binary_secret_is_refused_without_its_bytes(secretsmanager):
    secretsmanager.create_secret(Name="runctl/blob", SecretBinary=b"\x00binary")
    with pytest.raises(CloudError, match="it is a binary secret.*store it as a SecretString") as caught:
        resolve({"BLOB": "secretsmanager:runctl/blob"})
    assert "binary'" not in str(caught.value)


class _StubbedSession:
    """A session whose clients answer from a Stubber (``stubbers[service]``), for what moto
    does not do."""

    region_name = "us-east-1"

    def __init__(self, *services: str) -> None:
        real = boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b")
        self.clients = {service: real.client(service, region_name=self.region_name) for service in services}
        self.stubbers = {service: Stubber(client) for service, client in self.clients.items()}

    def client(self, service: str, region_name: str):
        assert region_name == self.region_name
        return self.clients[service]


def test_access_denied_says_which_permission_the_role_needs():
    session = _StubbedSession("ssm", "secretsmanager")
    session.stubbers["ssm"].add_client_error(
        "get_parameter", service_error_code="AccessDeniedException", http_status_code=400,
        service_message="User: arn:aws:sts::1:assumed-role/runctl-instance/i-0 is not authorized",
        expected_params={"Name": "/team/token", "WithDecryption": True})
    session.stubbers["secretsmanager"].add_client_error(
        "get_secret_value", service_error_code="AccessDeniedException", http_status_code=400,
        expected_params={"SecretId": "team/key"})
    with session.stubbers["ssm"], pytest.raises(AccessDenied) as caught:
        resolve({"TOKEN": "ssm:/team/token"}, session)
    line = str(caught.value)
    assert line.startswith("access denied: cannot read secret TOKEN (ssm:/team/token); the credentials need "
                           "ssm:GetParameter on the parameter")
    assert "runctl aws iam-policy --for instance" in line and "\n" not in line
    with session.stubbers["secretsmanager"], pytest.raises(AccessDenied, match="need secretsmanager:GetSecretValue"):
        resolve({"KEY": "secretsmanager:team/key"}, session)


def test_the_call_shapes_are_those_of_aws():
    session = _StubbedSession("ssm", "secretsmanager")
    session.stubbers["ssm"].add_response("get_parameter", {"Parameter": {"Name": "/p", "Value": "v1"}},
                                         {"Name": "/p", "WithDecryption": True})
    session.stubbers["secretsmanager"].add_response("get_secret_value", {"SecretString": "v2"}, {"SecretId": "s"})
    with session.stubbers["ssm"], session.stubbers["secretsmanager"]:
        assert SecretResolver(session).resolve({"P": "ssm:/p", "S": "secretsmanager:s"}) == {"P": "v1", "S": "v2"}


def test_no_region_and_no_credentials_are_one_line_each(monkeypatch):
    no_region = _StubbedSession()
    no_region.region_name = None  # no AWS_DEFAULT_REGION, no profile region
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(CloudError, match=r"^cannot read secret T \(ssm:/p\): no AWS region set; set AWS_REGION"):
        SecretResolver(no_region).resolve({"T": "ssm:/p"})
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(CredentialsError, match=r"^cannot read secret T \(ssm:/p\): no AWS credentials found"):
        resolve({"T": "ssm:/p"})


def test_nothing_to_resolve_needs_no_aws():
    assert resolve({}) == {}
