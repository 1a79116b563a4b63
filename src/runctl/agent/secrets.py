"""Resolving a job's secret references (``runctl.job_env``) into values, where the job runs.

The agent calls ``resolve`` just before each attempt, with its own credentials: the
instance role on AWS, the user's on their machine. The values go into the script's
environment and nowhere else: not the store, not a log, not an error. An error names the
variable and its reference, and on access denied the permission the credentials lack.

SSM parameters are read with ``WithDecryption=True`` (a SecureString's value, a String's
as it is); Secrets Manager secrets by their SecretString (a binary secret cannot be an
environment variable's value and is refused).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from runctl.errors import CloudError
from runctl.job_env import SecretRef, parse_reference

log = logging.getLogger(__name__)

#: What the credentials need per kind of reference (named in an access-denied error).
PERMISSIONS = {
    "ssm": "ssm:GetParameter on the parameter (and kms:Decrypt on its key when that is a customer managed key)",
    "secretsmanager": "secretsmanager:GetSecretValue on the secret (and kms:Decrypt on its key when that is a "
                      "customer managed key)",
}
POLICY_HINT = "runctl aws iam-policy --for instance allows /runctl/* parameters and runctl/* secrets"


@dataclass
class SecretResolver:
    """Reads secrets with one boto3 session (default: the usual credential chain and region,
    ``AWS_ENDPOINT_URL`` honoured); a client per service and region, made on first use."""

    session: object | None = None

    def __post_init__(self) -> None:
        self._clients: dict[tuple[str, str | None], object] = {}

    def resolve(self, references: Mapping[str, str]) -> dict[str, str]:
        """``{NAME: value}`` for ``{NAME: reference}``; a ``CloudError`` (exit 3) naming the
        first that cannot be read."""
        values = {}
        for name, text in references.items():
            ref = parse_reference(text)
            values[name] = self._read(name, ref)
        if references:
            log.info("resolved %d secret(s): %s", len(values), ", ".join(sorted(values)))  # names only
        return values

    def _read(self, name: str, ref: SecretRef) -> str:
        from runctl.errors.aws import aws_exceptions, cloud_error

        action = f"read secret {name} ({ref})"
        try:
            client = self._client(ref, action)
            if ref.kind == "ssm":
                return client.get_parameter(Name=ref.ident, WithDecryption=True)["Parameter"]["Value"]
            answer = client.get_secret_value(SecretId=ref.ident)
        except aws_exceptions() as exc:
            error = cloud_error(exc, action, permission=PERMISSIONS[ref.kind], policy_hint=POLICY_HINT)
            # Most lines name the action; the few that do not (no credentials at all) get it in front.
            line = error.message if action in error.message else f"cannot {action}: {error.message}"
            raise type(error)(line, code=error.code, operation=error.operation) from None
        if "SecretString" not in answer:
            raise CloudError(f"cannot {action}: it is a binary secret, and an environment variable holds text; "
                             "store it as a SecretString")
        return answer["SecretString"]

    def _client(self, ref: SecretRef, action: str):
        if self.session is None:
            import boto3

            self.session = boto3.session.Session()
        session = self.session
        # AWS_REGION too, as runctl's other AWS commands read it (botocore reads AWS_DEFAULT_REGION).
        region = ref.region or session.region_name or os.environ.get("AWS_REGION") or None
        if region is None:
            raise CloudError(f"cannot {action}: no AWS region set; set AWS_REGION, or give the "
                             f"{'parameter' if ref.kind == 'ssm' else 'secret'}'s ARN (it names its region)")
        if (ref.kind, region) not in self._clients:
            self._clients[ref.kind, region] = session.client(ref.kind, region_name=region)
        return self._clients[ref.kind, region]


def resolve(references: Mapping[str, str], session=None) -> dict[str, str]:
    """The values of ``references`` (``{NAME: "ssm:/path"}``), read with ``session``'s
    credentials (default: the usual chain); see ``SecretResolver``."""
    return SecretResolver(session).resolve(references) if references else {}
