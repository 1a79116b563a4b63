"""``runctl aws iam-policy``: print a least-privilege IAM policy for runctl (JSON)."""

from __future__ import annotations

import json

import click

from runctl.cli._context import pass_app


@click.command("iam-policy")
@click.option("--for", "who", type=click.Choice(["cli", "instance", "setup"]), default="cli", show_default=True,
              help="cli: the person running runctl; instance: the instance role; setup: runctl aws setup.")
@click.option("--bucket", metavar="NAME", help="Job bucket (default: [aws] s3_bucket).")
@click.option("--account", default="*", show_default=True, help="AWS account id to narrow the ARNs to.")
@click.option("--role", default="runctl-instance", show_default=True, help="Name of the instance role.")
@click.option("--partition", default="aws", show_default=True, help="ARN partition (aws, aws-cn, aws-us-gov).")
@pass_app
def iam_policy(app, who, bucket, account, role, partition):
    """Print the policy document for WHO; no AWS call is made.

    \b
    The instance policy is all the instance role needs: it lets the SSM agent in (Run
    Command, Session Manager) without AmazonSSMManagedInstanceCore, which would let the
    instances read every SSM parameter. The cli policy lets runctl stop, start and terminate
    only instances tagged runctl:created.
        runctl aws iam-policy --for cli --bucket my-bucket > runctl-cli.json
    """
    from runctl.backends.aws import iam

    bucket = bucket or app.config.aws.s3_bucket or "YOUR-JOB-BUCKET"
    if who == "instance":
        document = iam.instance_policy(bucket, account=account, partition=partition)
    else:
        document = iam.POLICIES[who](bucket, account=account, role=role, partition=partition)
    click.echo(json.dumps(document, indent=2))
