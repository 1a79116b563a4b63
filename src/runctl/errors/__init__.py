"""The one exception tree of runctl.

Every error the library raises on purpose is a ``RunctlError``; the CLI turns it into one
line on stderr and the exit code the class carries::

    RunctlError                     exit 1
    ├── JobFailed                   exit 1   the user's job failed
    ├── UsageError                  exit 2   bad arguments or input
    │   └── ConfigError             exit 2   .runctl.toml or RUNCTL_* is wrong
    └── ExternalError               exit 3   something outside runctl refused (.code, .operation)
        ├── StoreError              exit 3   checkpoint store (local folder or S3)
        │   ├── NotFoundError       exit 3   a key or snapshot that does not exist
        │   ├── PreconditionFailed  exit 3   a conditional write lost the race
        │   │   └── LeaseLost       exit 3   another agent holds the job's lease now
        │   └── IntegrityError      exit 3   a manifest or file that does not verify
        ├── CloudError              exit 3   AWS API
        │   ├── CloudNotFound       exit 3   the instance, parameter, repository ... does not exist
        │   ├── CloudConflict       exit 3   a conditional request refused, or it exists already
        │   ├── AccessDenied        exit 3   the credentials lack a permission
        │   ├── CredentialsError    exit 3   no credentials, unloadable, or refused by AWS
        │   ├── Throttled           exit 3   AWS asks to slow down: retry later
        │   └── NoCapacity          exit 3   no capacity for that type there: try another
        └── RegistryError           exit 3   Docker / container registry

Adapters translate foreign exceptions at the boundary (``raise StoreError(...) from exc``)
so that nothing else needs to know about botocore or OSError details. Every botocore error
is translated in one place, ``runctl.errors.aws``: the class says what kind of refusal it
was, ``code`` and ``operation`` carry the AWS error code and the API operation (as httpx's
``HTTPStatusError`` carries the response), so that callers decide by class or code, never
by the message. The S3 store raises the same errors as ``StoreError`` subclasses (a missing
key is a ``NotFoundError``, a lost conditional write a ``PreconditionFailed``), code and
operation kept.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_EXTERNAL = 3
EXIT_INTERRUPTED = 130


class RunctlError(Exception):
    """Base of every error runctl raises on purpose."""

    exit_code = EXIT_JOB_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class JobFailed(RunctlError):
    exit_code = EXIT_JOB_FAILED


class UsageError(RunctlError):
    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    pass


class ExternalError(RunctlError):
    """``code``: the outside service's error code ('' when it gave none, e.g. no answer at
    all); ``operation``: the API operation refused ('' when not one call's)."""

    exit_code = EXIT_EXTERNAL

    def __init__(self, message: str, *, hint: str | None = None, code: str = "", operation: str = "") -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.operation = operation


class StoreError(ExternalError):
    pass


class NotFoundError(StoreError):
    pass


class PreconditionFailed(StoreError):
    pass


class LeaseLost(PreconditionFailed):
    """This agent no longer holds (or can no longer prove it holds) the job's lease: it must
    stop its script and write nothing more for the job."""


class IntegrityError(StoreError):
    pass


class CloudError(ExternalError):
    pass


class CloudNotFound(CloudError):
    pass


class CloudConflict(CloudError):
    pass


class AccessDenied(CloudError):
    pass


class CredentialsError(CloudError):
    pass


class Throttled(CloudError):
    pass


class NoCapacity(CloudError):
    pass


class RegistryError(ExternalError):
    pass


class EnvironmentFailed(JobFailed):
    """The job's environment could not be built: uv or a setup command failed. The job fails
    once (another machine would fail the same way); ``tail``: the last lines of its output."""

    def __init__(self, message: str, *, tail: tuple[str, ...] = (), exit_code: int | None = None) -> None:
        super().__init__(message)
        self.tail = tail
        self.step_exit_code = exit_code
