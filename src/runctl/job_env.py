"""A job's environment variables and secret references, as the user writes them. Pure.

``--env KEY=VALUE`` and ``[jobs.NAME.env]`` give a variable its value; the value is part
of the job's spec (job.json in the store), so it is no place for a secret.

``--secret NAME=REF`` and ``[jobs.NAME.secrets]`` give a variable a reference instead:

- ``ssm:/path/to/parameter`` (or ``ssm:NAME``, or a parameter's ARN after ``ssm:``): an
  SSM Parameter Store parameter, SecureString or String;
- ``secretsmanager:ID``: a Secrets Manager secret's name or ARN (its SecretString).

Only the reference is stored. The agent resolves it just before each attempt, with its own
credentials (``runctl.agent.secrets``), and gives the value to the script's environment only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runctl.errors import UsageError

VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KINDS = ("ssm", "secretsmanager")
REFERENCE_FORMS = "ssm:/path/to/parameter or secretsmanager:SECRET_ID"
# What an ARN says about where the secret lives: arn:PARTITION:SERVICE:REGION:ACCOUNT:...
_ARN = re.compile(r"arn:[a-z-]+:(ssm|secretsmanager):([a-z0-9-]*):\d*:.+")


@dataclass(frozen=True)
class SecretRef:
    """Where a secret is: ``kind`` is ``ssm`` or ``secretsmanager``, ``ident`` the parameter's
    name or ARN, or the secret's id or ARN."""

    kind: str
    ident: str

    @property
    def region(self) -> str | None:
        """The region an ARN names; None for a plain name (the agent's region applies)."""
        found = _ARN.fullmatch(self.ident)
        return found.group(2) or None if found else None

    def __str__(self) -> str:
        return f"{self.kind}:{self.ident}"


def parse_reference(text: str) -> SecretRef:
    """``text`` as a SecretRef, or ``ValueError`` saying why it is none. The message never
    holds ``text``: what a user gives where a reference belongs may be the secret itself."""
    kind, sep, ident = text.partition(":")
    if not sep or kind not in KINDS:
        raise ValueError(f"not a secret reference ({REFERENCE_FORMS})")
    if not ident.strip() or ident != ident.strip():
        raise ValueError(f"'{kind}:' is followed by no {'parameter' if kind == 'ssm' else 'secret'} name "
                         f"({REFERENCE_FORMS})")
    found = _ARN.fullmatch(ident)
    if ident.startswith("arn:") and (found is None or found.group(1) != kind):
        raise ValueError(f"the ARN after '{kind}:' is not one of {kind}")
    return SecretRef(kind, ident)


def check_name(name: str) -> str:
    """``name`` when it can be an environment variable's name, else ``ValueError``."""
    if not VARIABLE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is no variable name (letters, digits and _, not starting with a digit)")
    return name


def parse_pairs(pairs: Iterable[str], option: str, *, references: bool = False) -> dict[str, str]:
    """``KEY=VALUE`` items of a repeatable ``option`` as a dict (the last of a name wins);
    with ``references``, every value must be a secret reference. ``UsageError`` (exit 2) on
    the first bad item, naming it and the fix; never showing a value, nor an item without
    '=' (it may be a value given alone)."""
    found: dict[str, str] = {}
    form = "NAME=ssm:/path/to/parameter or NAME=secretsmanager:SECRET_ID" if references else "KEY=VALUE"
    for item in pairs:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{option}: an item has no '=' (not shown: it may be a value); give {form}")
        try:
            check_name(name)
            if references:
                parse_reference(value)
        except ValueError as exc:
            raise UsageError(f"{option} {name}=...: {exc}; give {form}") from None
        found[name] = value
    return found


def check_references(table: Mapping[str, str]) -> dict[str, str]:
    """A ``[jobs.NAME.secrets]`` table: every key a variable name, every value a reference;
    ``ValueError`` naming the first that is not (for the config's one-line errors)."""
    for name, value in table.items():
        try:
            check_name(name)
            parse_reference(value)
        except ValueError as exc:
            raise ValueError(f"a table of secret references (NAME = \"ssm:/path\" or \"secretsmanager:ID\"); "
                             f"{name}: {exc}") from None
    return dict(table)


def overlap(env: Mapping[str, str], secrets: Mapping[str, str]) -> list[str]:
    """Names given both a value and a secret reference."""
    return sorted(set(env) & set(secrets))
