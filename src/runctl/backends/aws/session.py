"""One AWS session for one region.

``AwsSession(region)`` checks the region against botocore's own endpoint data before any
request (``UsageError``, with a suggestion), then makes clients on demand from one boto3
Session. botocore honours ``AWS_ENDPOINT_URL`` (moto, LocalStack) and the usual credential
chain; ``max_attempts`` caps retries (unset: ``AWS_MAX_ATTEMPTS`` or botocore's default).

``translate(action)``, ``cloud_error`` and ``error_code`` are ``runctl.errors.aws``'s, the
one place where botocore errors become runctl errors; the AWS backends import them from
here. boto3 and botocore are imported inside the functions, never at module import.
"""

from __future__ import annotations

import difflib
import logging
import os
import re

from runctl.errors import CloudError, CredentialsError, UsageError
from runctl.errors.aws import cloud_error, error_code, translate

# translate, cloud_error and error_code are re-exported: the AWS backends take them from here.
__all__ = ["AwsSession", "check_instance_id", "check_region", "cloud_error", "error_code", "known_regions",
           "translate"]

log = logging.getLogger(__name__)

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?\Z")


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
        raise cloud_error(exc, "read the AWS configuration") from exc
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
            from botocore.exceptions import BotoCoreError

            try:
                self._session = boto3.session.Session(region_name=self.region)
            except BotoCoreError as exc:  # a missing AWS_PROFILE fails here already
                raise cloud_error(exc, "load the AWS configuration") from exc
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
            if isinstance(exc, CredentialsError):  # nothing else would work either: say so now
                raise
            log.info("cannot read the caller identity (%s); using $USER", exc)
            arn = ""
        return arn.rsplit("/", 1)[-1] if "/" in arn else (os.environ.get("USER") or "unknown")
