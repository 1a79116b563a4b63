"""The one translation of botocore (and boto3 transfer) errors into runctl errors.

``cloud_error(exc, action, ...)`` makes one exception, raised while trying to ``action``,
a ``CloudError`` of one line: its class from the AWS error code (``error_class``, the only
table of codes in runctl), ``code`` and ``operation`` from the response. ``translate`` is
the context manager that raises it. The AWS backends raise it as it is; the S3 store raises
it in the store's terms (``store_error``). A message is made of the action, the code and
the first line of AWS's message, never of anything the credentials hold.

boto3 and botocore are imported inside the functions: the CLI imports ``runctl.errors``
at start and must not pay for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit

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

NO_CREDENTIALS = "no AWS credentials found; configure them (aws configure, AWS_PROFILE or environment variables)"
POLICY_HINT = "runctl aws iam-policy --for cli prints a policy"

_BAD_CREDENTIALS = frozenset({
    "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException", "ExpiredToken",
    "ExpiredTokenException", "InvalidAccessKeyId", "RequestExpired", "InvalidToken", "TokenRefreshRequired",
})
# S3's HEAD requests answer a bare status as the code ("403", "404"): no body to name one.
_DENIED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "UnauthorizedAccess",
                     "Forbidden", "403", "AllAccessDisabled", "AccountProblem"})
_THROTTLED = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException",
                        "SlowDown"})
# 412: the condition failed; 409 ConditionalRequestConflict: a concurrent conditional write won.
_PRECONDITION = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_NOT_FOUND = frozenset({"404", "InvocationDoesNotExist", "InvalidInstanceID.Malformed"})
_NO_INSTANCE = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
# Errors that say "not here, try another instance type or subnet" (RunInstances error codes
# and CreateFleet per-pool error codes alike).
_CAPACITY = frozenset({
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientFreeAddressesInSubnet",
    "UnfulfillableCapacity",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
    "Unsupported",  # the type is not offered in that availability zone
})


def error_class(code: str, status: int | None = None) -> type[CloudError]:
    """The CloudError subclass for an AWS error code; for a bare answer (no code, or the
    status as the code) the HTTP status decides. Also for the codes inside a response, e.g.
    CreateFleet's per-pool errors."""
    bare = status if not code or code.isdigit() else None
    if code in _BAD_CREDENTIALS:
        return CredentialsError
    if code in _PRECONDITION or bare == 412 or code.endswith(("AlreadyExists", "AlreadyExistsException",
                                                                "AlreadyOwnedByYou")):
        return CloudConflict
    if code in _NOT_FOUND or code.startswith("NoSuch") or code.endswith(("NotFound", "NotFoundException")) \
            or bare == 404:
        return CloudNotFound
    if code in _DENIED or bare == 403:
        return AccessDenied
    if code in _THROTTLED:
        return Throttled
    if code in _CAPACITY:
        return NoCapacity
    return CloudError


def error_code(exc) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else): for the few
    adapters that need AWS's own message too, before translation."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def transport_errors() -> tuple[type[BaseException], ...]:
    """What the HTTP layer raises, unwrapped, when a connection drops, resets or times out:
    botocore wraps most of these, but not on every path (transfer manager threads, response
    streams), and a foreign exception would escape the callers' retries."""
    import http.client

    from urllib3.exceptions import HTTPError

    return (HTTPError, http.client.HTTPException, ConnectionError, TimeoutError)


def aws_exceptions() -> tuple[type[BaseException], ...]:
    """Everything ``cloud_error`` translates: what an ``except`` around AWS calls catches."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError, S3UploadFailedError, RetriesExceededError, *transport_errors())


def cloud_error(exc: BaseException, action: str, *, permission: str | None = None, subject: str | None = None,
                instance_id: str | None = None, region: str = "", service: str = "AWS", endpoint: str = "",
                policy_hint: str | None = POLICY_HINT) -> CloudError:
    """One line for ``exc``, raised while trying to ``action`` ("describe i-0123...", "read
    s3://bucket/key"), as the CloudError subclass its code calls for.

    ``subject``: the object the request names (an S3 URL), for "... does not exist";
    ``instance_id`` and ``region`` for "instance ... not found in ..."; ``permission``: the
    IAM action the call needs, named on access denied, followed by ``policy_hint``;
    ``service`` and ``endpoint`` (when the error names none) for connection failures.
    """
    from botocore.exceptions import (
        ClientError,
        CredentialRetrievalError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
    )
    from botocore.exceptions import ConnectionError as UnreachableError

    exc = _unwrap(exc)
    if isinstance(exc, ClientError):
        return _client_error(exc, action, permission=permission, subject=subject, instance_id=instance_id,
                             region=region, policy_hint=policy_hint)
    if isinstance(exc, NoCredentialsError):
        return CredentialsError(NO_CREDENTIALS)
    if isinstance(exc, ProfileNotFound):
        return CredentialsError(_profile_not_found(exc))
    if isinstance(exc, (PartialCredentialsError, CredentialRetrievalError)):
        return CredentialsError(f"cannot load AWS credentials: {exc}")
    if isinstance(exc, NoRegionError):
        return CloudError("no AWS region set; pass --region or set [aws] region")
    if isinstance(exc, UnreachableError):
        url = getattr(exc, "kwargs", {}).get("endpoint_url") or endpoint
        at = f" {_endpoint(url)}" if url else ""
        return CloudError(f"cannot reach the {service} endpoint{at} to {action}")
    if isinstance(exc, (HTTPClientError, *transport_errors())):
        return CloudError(f"connection to {service} failed while trying to {action}: {exc}")
    return CloudError(f"cannot {action}: {exc}")


def store_error(error: CloudError) -> StoreError:
    """``error`` in the store's terms, message, code and operation kept: a missing object
    is a NotFoundError, a refused conditional write a PreconditionFailed."""
    kind = NotFoundError if isinstance(error, CloudNotFound) else (
        PreconditionFailed if isinstance(error, CloudConflict) else StoreError)
    return kind(error.message, hint=error.hint, code=error.code, operation=error.operation)


@contextlib.contextmanager
def translate(action: str, **context) -> Iterator[None]:
    """Raise every AWS error inside the block as a one-line ``CloudError`` (``context``:
    the keyword arguments of ``cloud_error``)."""
    try:
        yield
    except aws_exceptions() as exc:
        raise cloud_error(exc, action, **context) from exc


def _client_error(exc, action: str, *, permission: str | None, subject: str | None, instance_id: str | None,
                  region: str, policy_hint: str | None) -> CloudError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    operation = str(getattr(exc, "operation_name", "") or "")
    message = str(error.get("Message") or "")
    kind = error_class(code, status)
    where = f" in {region}" if region else ""

    def made(text: str) -> CloudError:
        return kind(text, code=code, operation=operation)

    if kind is CloudNotFound and instance_id and code in _NO_INSTANCE:
        return made(f"instance {instance_id} not found{where}")
    if kind is CloudNotFound and subject:
        return made(f"{subject} does not exist")
    if kind is CloudConflict and subject:
        return made(f"{subject} changed or already exists (conditional request refused)")
    if kind is CredentialsError:
        return made(f"AWS rejected the credentials ({code}) while trying to {action}; "
                    "check AWS_PROFILE / the access key and its session token")
    if kind is AccessDenied:
        needs = f"; the credentials need {permission}" if permission else ""
        return made(f"access denied: cannot {action}{needs}" + (f" ({policy_hint})" if policy_hint else ""))
    if kind is Throttled:
        return made(f"AWS is throttling requests ({code}) while trying to {action}; retry in a minute")
    first_line = message.strip().splitlines()[0] if message.strip() else ""
    if code == "OptInRequired":
        return made(f"the account is not opted in to {region or 'this region'} or to EC2 there: {first_line}")
    if not first_line or first_line.startswith("<") or code.isdigit():
        # No AWS error in the body (an HTML error page, or none): say which call failed how.
        unimplemented = " (an AWS emulator may not implement it)" if str(status or code) in ("500", "501") else ""
        return made(f"cannot {action}: {operation or 'the call'} answered HTTP {status or code}{unimplemented}")
    return made(f"cannot {action}: {code or status}: {first_line}")


def _unwrap(exc: BaseException) -> BaseException:
    """The error behind boto3's transfer wrappers: S3UploadFailedError flattens it into a
    string (the original is its context), RetriesExceededError keeps the last one."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, S3UploadFailedError):
        context = exc.__context__
        return context if isinstance(context, (ClientError, BotoCoreError, *transport_errors())) else exc
    if isinstance(exc, RetriesExceededError):
        return exc.last_exception or exc
    return exc


def _endpoint(url: str) -> str:
    """scheme://host[:port] of a request URL whose path names a bucket and key (botocore
    reports the whole request URL); a URL without a path as it is."""
    parts = urlsplit(url)
    if not (parts.scheme and parts.netloc) or parts.path in ("", "/"):
        return url
    return f"{parts.scheme}://{parts.netloc}"


def _profile_not_found(exc) -> str:
    """One line for botocore's ProfileNotFound."""
    return (f"AWS profile {exc.kwargs.get('profile')!r} not found; fix AWS_PROFILE "
            "(aws configure list-profiles shows the profiles there are)")
