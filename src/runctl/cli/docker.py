"""runctl docker build|push: the project's image, tagged by content, pushed to ECR (or [docker] registry)."""

from __future__ import annotations

import click

from runctl.cli._context import output_option, pass_app
from runctl.cli._images import build_or_push
from runctl.cli.aws._shared import region_option

image_options = [
    click.option("--repository", metavar="NAME", help="Repository name (default: [docker] repository, else the folder's name)."),
    click.option("--tag", metavar="TAG", help="Image tag (default: a content hash of the build context)."),
    click.option("--dockerfile", metavar="PATH", help="Dockerfile (default: [docker] dockerfile, else found in the project)."),
    click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
                 help="docker build argument (repeatable; adds to [docker] build_args)."),
    region_option,  # of the ECR registry
    output_option,
]


def _with_image_options(func):
    for option in reversed(image_options):
        func = option(func)
    return func


@click.group(name="docker")
def docker() -> None:
    """Build the project's image and push it to a registry (ECR by default)."""


@docker.command(name="build")
@click.option("--push", "push", is_flag=True, help="Push the image too (only when the registry lacks its tag).")
@_with_image_options
@pass_app
def build(app, push, repository, tag, dockerfile, build_args, region):
    """Build the image (skipped when its content tag exists already)."""
    result = build_or_push(app, push=push, repository=repository, tag=tag, dockerfile=dockerfile,
                           build_args=build_args, region=region)
    app.output.report(result, lambda: None)


@docker.command(name="push")
@_with_image_options
@pass_app
def push(app, repository, tag, dockerfile, build_args, region):
    """Build when needed, then push (skipped when the registry has the tag)."""
    result = build_or_push(app, push=True, repository=repository, tag=tag, dockerfile=dockerfile,
                           build_args=build_args, region=region)
    app.output.report(result, lambda: None)
