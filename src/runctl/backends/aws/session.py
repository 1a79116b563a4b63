"""One AWS session for one region, and the one place where botocore errors become runctl errors.

``AwsSession(region)`` checks the region against botocore's own endpoint data before any
request (``UsageError``, with a suggestion), then makes clients on demand from one boto3
Session. botocore honours ``AWS_ENDPOINT_URL`` (moto, LocalStack) and the usual credential
chain; ``max_attempts`` caps retries (unset: ``AWS_MAX_ATTEMPTS`` or botocore's default).

``translate(action)`` is a context manager that turns every botocore exception into a
``CloudError`` (exit 3) of one line: no credentials, credentials refused, access denied
(naming the permission), an unknown instance, throttling, an unreachable endpoint.
boto3 and botocore are imported inside the functions, never at module import.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re
from collections.abc import Iterator

from runctl.errors import CloudError, UsageError
from runctl.store.s3 import profile_not_found

log = logging.getLogger(__name__)

NO_CREDENTIALS = ("no AWS credentials found; configure them (aws configure, AWS_PROFILE or "
                  "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?\Z")

_BAD_CREDENTIALS = {"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
                    "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId", "RequestExpired"}
_DENIED = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "UnauthorizedAccess"}
_THROTTLED = {"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"}
_NO_INSTANCE = {"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"}


def known_regions() -> list[str]:
    """Every region botocore's endpoint data lists for EC2, all partitions (no request made)."""
    import botocore.session
    from botocore.exceptions import ProfileNotFound

    session = botocore.session.get_session()
    regions: set[str] = set()
    try:  # reading the endpoint data loads the configuration: a missing AWS_PROFILE fails here
        for partition in session.get_available_partitions():
            regions.update(session.get_available_regions("ec2", partition))
    except ProfileNotFound as exc:
        raise CloudError(profile_not_found(exc)) from exc
    return sorted(regions)


def check_region(region: str, known: list[str] | None = None) -> str:
    """``region`` when EC2 exists there, else ``UsageError`` with the closest names."""
    known = known_regions() if known is None else known
    if region in known:
        return region
    close = difflib.get_close_matches(region, known, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "e.g. 'us-east-1', 'eu-west-1'"
    raise UsageError(f"unknown region {region!r}; {hint} (a region newer than this botocore needs an upgrade)")


def check_instance_id(instance_id: str) -> str:
    if not INSTANCE_ID.match(instance_id):
        raise UsageError(f"{instance_id!r} is not an EC2 instance id (i- and 8 or 17 hex digits)")
    return instance_id


class AwsSession:
    """A boto3 Session bound to one (checked) region; clients are made once and shared."""

    def __init__(self, region: str, *, max_attempts: int | None = None, session=None,
                 known: list[str] | None = None) -> None:
        self.region = check_region(region, known)
        self.max_attempts = max_attempts
        self._session = session
        self._clients: dict[str, object] = {}
        self._caller: dict | None = None

    @property
    def session(self):
        if self._session is None:
            import boto3
            from botocore.exceptions import BotoCoreError, ProfileNotFound

            try:
                self._session = boto3.session.Session(region_name=self.region)
            except ProfileNotFound as exc:
                raise CloudError(profile_not_found(exc)) from exc
            except BotoCoreError as exc:
                raise CloudError(f"cannot load the AWS configuration: {exc}") from exc
        return self._session

    def client(self, service: str):
        if service not in self._clients:
            from botocore.config import Config

            retries: dict = {"mode": "standard"}
            if self.max_attempts is not None:
                retries["max_attempts"] = self.max_attempts
            config = Config(retries=retries, connect_timeout=10, read_timeout=60)
            with translate(f"connect to {service}"):
                self._clients[service] = self.session.client(service, region_name=self.region, config=config)
        return self._clients[service]

    def caller(self) -> dict:
        """STS GetCallerIdentity (Account, Arn, UserId), asked once."""
        if self._caller is None:
            with translate("identify the caller (sts:GetCallerIdentity)"):
                self._caller = self.client("sts").get_caller_identity()
        return self._caller

    def account_id(self) -> str:
        return str(self.caller()["Account"])

    def user_name(self) -> str:
        """Who is launching: the last part of the caller ARN, else $USER."""
        try:
            arn = str(self.caller().get("Arn", ""))
        except CloudError as exc:
            if str(exc) == NO_CREDENTIALS:
                raise
            log.info("cannot read the caller identity (%s); using $USER", exc)
            arn = ""
        return arn.rsplit("/", 1)[-1] if "/" in arn else (os.environ.get("USER") or "unknown")


def error_code(exc) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def cloud_error(exc: Exception, action: str, *, instance_id: str | None = None, region: str = "",
                permission: str | None = None) -> CloudError:
    """One line for a botocore exception raised while trying to ``action``."""
    from botocore.exceptions import (
        ClientError,
        CredentialRetrievalError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError):
        return CloudError(NO_CREDENTIALS)
    if isinstance(exc, (PartialCredentialsError, CredentialRetrievalError)):
        return CloudError(f"cannot load AWS credentials: {exc}")
    if isinstance(exc, NoRegionError):
        return CloudError("no AWS region set; pass --region or set [aws] region")
    if isinstance(exc, EndpointConnectionError):
        return CloudError(f"cannot reach the AWS endpoint {exc.kwargs.get('endpoint_url', '')} to {action}")
    if not isinstance(exc, ClientError):
        return CloudError(f"cannot {action}: {exc}")
    code = error_code(exc)
    message = exc.response.get("Error", {}).get("Message") or ""
    where = f" in {region}" if region else ""
    if code in _NO_INSTANCE and instance_id:
        return CloudError(f"instance {instance_id} not found{where}")
    if code in _BAD_CREDENTIALS:
        return CloudError(f"AWS rejected the credentials ({code}) while trying to {action}; "
                          "check AWS_PROFILE / the access key and its session token")
    if code in _DENIED:
        needs = f"; the credentials need {permission}" if permission else ""
        return CloudError(f"access denied: cannot {action}{needs} (runctl aws iam-policy --for cli prints a policy)")
    if code in _THROTTLED:
        return CloudError(f"AWS is throttling requests ({code}) while trying to {action}; retry in a minute")
    if code == "OptInRequired":
        return CloudError(f"the account is not opted in to {region or 'this region'} or to EC2 there: {message}")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if not message or message.lstrip().startswith("<") or code.isdigit():
        # No AWS error in the body (an HTML error page): say which call failed how.
        unimplemented = " (an AWS emulator may not implement it)" if str(status or code) in ("500", "501") else ""
        return CloudError(f"cannot {action}: {getattr(exc, 'operation_name', 'the call')} answered HTTP "
                          f"{status or code}{unimplemented}")
    return CloudError(f"cannot {action}: {code or status}: {message.splitlines()[0]}")


@contextlib.contextmanager
def translate(action: str, *, instance_id: str | None = None, region: str = "",
              permission: str | None = None) -> Iterator[None]:
    """Raise every botocore error inside the block as a one-line ``CloudError``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise cloud_error(exc, action, instance_id=instance_id, region=region, permission=permission) from exc
