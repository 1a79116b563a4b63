"""runctl docker build|push: the project's image, tagged by content, pushed to ECR (or [docker] registry)."""

from __future__ import annotations

import click

from runctl.cli import _common
from runctl.cli._context import output_option, pass_app

image_options = [
    click.option("--repository", metavar="NAME", help="Repository name (default: [docker] repository, else the folder's name)."),
    click.option("--tag", metavar="TAG", help="Image tag (default: a content hash of the build context)."),
    click.option("--dockerfile", metavar="PATH", help="Dockerfile (default: [docker] dockerfile, else found in the project)."),
    click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
                 help="docker build argument (repeatable; adds to [docker] build_args)."),
    click.option("--region", help="AWS region of the ECR registry (default: [aws] region)."),
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


def docker_cli():
    from runctl.backends.docker import DockerCli

    return DockerCli()


def build_local(app, *, repository=None, tag=None, dockerfile=None, build_args=(), quiet=False):
    """Build (or find) the project's image; notes what it did. Returns the BuiltImage."""
    from runctl.backends.docker_image import build_image, parse_build_args

    config = app.config.docker
    args = {**parse_build_args(config.build_args), **parse_build_args(build_args)}
    cli = docker_cli()
    image = build_image(cli, _common.project_dir(), dockerfile=dockerfile or config.dockerfile,
                        repository=repository or config.repository, tag=tag, build_args=args)
    where = image.dockerfile.relative_to(_common.project_dir()) if image.dockerfile.is_relative_to(
        _common.project_dir()) else image.dockerfile
    if not quiet:
        app.output.note(f"runctl: image {image.local_ref} " + (f"built from {where}" if image.built else
                                                                "up to date (content unchanged); not built"))
    return cli, image


def build_or_push(app, *, push, repository, tag, dockerfile, build_args, region):
    cli, image = build_local(app, repository=repository, tag=tag, dockerfile=dockerfile, build_args=build_args)
    result = {"image": image.local_ref, "built": image.built, "dockerfile": str(image.dockerfile)}
    if push:
        pushed = push_built(app, cli, image, region)
        result.update(ref=pushed.ref, pushed=pushed.pushed, created_repository=pushed.created_repository)
    return result


def push_built(app, cli, image, region=None):
    from runctl.backends.docker_image import push_image, registry_for

    config = app.config
    session = None
    if (config.docker.login or "ecr") != "none":
        from runctl.backends.aws.session import AwsSession

        session = AwsSession(region or config.aws.region)
    registry, ecr = registry_for(config.docker, session)
    pushed = push_image(cli, image, registry, ecr_client=ecr)
    if pushed.created_repository:
        app.output.note(f"runctl: created repository {image.repository}")
    app.output.note(f"runctl: pushed {pushed.ref}" if pushed.pushed else
                    f"runctl: {pushed.ref} is in the registry already; nothing pushed")
    return pushed
