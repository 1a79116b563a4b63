"""``runctl aws setup``: the job bucket, the instance role and profile, and the config keys.

Creates only what is missing (running it again changes nothing), then records ``region``,
``s3_bucket`` and ``iam_instance_profile`` under ``[aws]`` in the project's .runctl.toml:
only those lines change, comments and every other line stay as they were.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import aws_session, region_option
from runctl.errors import UsageError

_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]")


def _value_span(line: str) -> tuple[int, int] | None:
    """Where the value of a ``key = value  # comment`` line starts and ends."""
    eq = line.find("=")
    if eq < 0:
        return None
    start = eq + 1
    while start < len(line) and line[start] in " \t":
        start += 1
    if line[start:start + 1] in ('"', "'"):
        end = line.find(line[start], start + 1)
        end = len(line.rstrip("\r\n")) if end < 0 else end + 1
    else:
        hash_at = line.find("#", start)
        end = len(line.rstrip("\r\n")) if hash_at < 0 else hash_at
        while end > start and line[end - 1] in " \t":
            end -= 1
    return start, end


def set_toml_keys(text: str, section: str, values: dict[str, str]) -> str:
    """``text`` with ``key = value`` set under ``[section]`` for each item (values written as
    TOML already). A key's line is edited in place; a missing key goes after its commented-out
    template line (``# key = ...``) or the section's last line; a missing section is appended."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    header = next((i for i, line in enumerate(lines)
                   if (m := _HEADER.match(line)) and m.group(1) == section and not line.lstrip().startswith("[[")),
                  None)
    if header is None:
        block = [f"[{section}]\n", *(f"{k} = {v}\n" for k, v in values.items())]
        return "".join(lines + (["\n"] if lines and lines[-1].strip() else []) + block)
    end = next((i for i in range(header + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
    for key, value in values.items():
        assign = re.compile(rf"^\s*{re.escape(key)}\s*=")
        template = re.compile(rf"^\s*#\s*{re.escape(key)}\s*=")
        found = next((i for i in range(header + 1, end) if assign.match(lines[i])), None)
        if found is not None:
            start, stop = _value_span(lines[found])
            lines[found] = lines[found][:start] + value + lines[found][stop:]
            continue
        at = next((i + 1 for i in range(header + 1, end) if template.match(lines[i])), None)
        if at is None:
            at = end
            while at > header + 1 and not lines[at - 1].strip():
                at -= 1
        lines.insert(at, f"{key} = {value}\n")
        end += 1
    return "".join(lines)


def config_target(app) -> Path:
    """The project's .runctl.toml: the one in use when it is a project file, else ./.runctl.toml."""
    from runctl.config import CONFIG_FILENAME

    source = app.config.source_path
    return source if source is not None and source.name == CONFIG_FILENAME else Path.cwd() / CONFIG_FILENAME


@click.command("setup")
@click.option("--bucket", metavar="NAME", help="Job bucket (default: [aws] s3_bucket, else runctl-ACCOUNT-REGION).")
@click.option("--role", default="runctl-instance", show_default=True,
              help="Name of the instance role and of its instance profile.")
@click.option("--dry-run", is_flag=True, help="Say what would be created and written; change nothing.")
@region_option
@output_option
@pass_app
def setup(app, bucket, role, dry_run, region):
    """Create the job bucket and the instance role/profile, and record them in .runctl.toml.

    The role may use the job bucket only, pull from ECR and be managed by SSM
    (AmazonSSMManagedInstanceCore). Safe to run again: existing resources are kept.
    """
    from runctl.backends.aws.iam import default_bucket
    from runctl.backends.aws.setup import ensure_bucket, ensure_instance_role
    from runctl.config import toml_value

    session = aws_session(app, region)
    account = session.account_id()
    bucket = bucket or app.config.aws.s3_bucket or default_bucket(account, session.region)
    try:
        partition = session.session.get_partition_for_region(session.region)
    except Exception:  # noqa: BLE001 - older botocore: the commercial partition
        partition = "aws"
    steps = ensure_bucket(session.client("s3"), bucket, session.region, dry_run=dry_run)
    steps += ensure_instance_role(session.client("iam"), role=role, bucket=bucket, account=account,
                                  partition=partition, dry_run=dry_run)
    target = config_target(app)
    keys = {"region": toml_value(session.region), "s3_bucket": toml_value(bucket),
            "iam_instance_profile": toml_value(role)}
    if not dry_run:
        try:
            old = target.read_text(encoding="utf-8") if target.exists() else ""
            target.write_text(set_toml_keys(old, "aws", keys), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None

    def text() -> None:
        for step in steps:
            app.output.line(step.describe())
        verb = "would set" if dry_run else "set"
        app.output.line(f"{target}: {verb} [aws] " + ", ".join(f"{k} = {v}" for k, v in keys.items()))

    app.output.report({"steps": steps, "config": str(target), "keys": {k: json.loads(v) for k, v in keys.items()},
                       "dry_run": dry_run}, text)
