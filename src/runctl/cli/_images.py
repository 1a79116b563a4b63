"""The project's Docker image, built and pushed: what ``runctl docker``, ``runctl run --docker``
and the ``runctl aws`` job commands share."""

from __future__ import annotations

from runctl.cli import _common


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
        from runctl.cli.aws._shared import aws_session

        session = aws_session(app, region)  # the job's region: the instance pulls from there
    registry, ecr = registry_for(config.docker, session)
    pushed = push_image(cli, image, registry, ecr_client=ecr)
    if pushed.created_repository:
        app.output.note(f"runctl: created repository {image.repository}")
    app.output.note(f"runctl: pushed {pushed.ref}" if pushed.pushed else
                    f"runctl: {pushed.ref} is in the registry already; nothing pushed")
    return pushed
