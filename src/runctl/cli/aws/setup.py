"""``runctl aws setup``: the job bucket, the instance role and profile, and the config keys.

Creates only what is missing (running it again changes nothing), then records ``region``,
``s3_bucket`` and ``iam_instance_profile`` under ``[aws]`` in the project's .runctl.toml
(``runctl.backends.aws.setup.set_config_keys``): only those lines change, comments and every
other line stay as they were.
"""

from __future__ import annotations

from pathlib import Path

import click

from runctl.cli._context import output_option, pass_app
from runctl.cli.aws._shared import aws_session, region_option
from runctl.errors import UsageError

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

    The role may use the job bucket only, pull from ECR, read SSM parameters under /runctl/
    and let the SSM agent in; on a role an older runctl made, the managed policy
    AmazonSSMManagedInstanceCore (every parameter readable) is detached. Safe to run again:
    existing resources are kept.
    """
    from runctl.backends.aws.iam import default_bucket
    from runctl.backends.aws.setup import ensure_bucket, ensure_instance_role, set_config_keys
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
    keys = {"region": session.region, "s3_bucket": bucket, "iam_instance_profile": role}
    if not dry_run:
        try:
            # bytes, not text: reading text would turn the user's \r\n line ends into \n
            old = target.read_bytes().decode("utf-8") if target.exists() else ""
            target.write_bytes(set_config_keys(old, "aws", keys, source=str(target)).encode("utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None

    def text() -> None:
        for step in steps:
            app.output.line(step.describe())
        verb = "would set" if dry_run else "set"
        app.output.line(f"{target}: {verb} [aws] " + ", ".join(f"{k} = {toml_value(v)}" for k, v in keys.items()))

    app.output.report({"steps": steps, "config": str(target), "keys": keys, "dry_run": dry_run}, text)
