"""The image a job sent to an instance runs in (``runctl aws train|run``).

A Dockerfile found in the project (as ``runctl docker build`` finds it) means Docker: the
image is built and pushed (each skipped when its content tag exists), and the job's spec
names it; ``--no-docker`` (or ``[docker] enabled = false``) opts out, ``--docker-image``
uses a prebuilt image. Code sync is then off unless ``--sync-code`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from runctl.cli import _common

docker_options = [
    click.option("--no-docker", is_flag=True, help="Do not use Docker even when the project has a Dockerfile."),
    click.option("--docker-image", metavar="IMAGE", help="Run the job in this prebuilt image (pulled on the instance)."),
]


def with_docker_options(func):
    for option in reversed(docker_options):
        func = option(func)
    return func


@dataclass(frozen=True)
class JobImage:
    ref: str
    registry_login: str  # "ecr" or "" (see JobSpec.registry_login)


def prepare_image(app, *, no_docker: bool, docker_image: str | None, region: str | None) -> JobImage | None:
    """The image the job runs in (built and pushed when needed), or None to run without Docker."""
    from runctl.backends.docker import find_dockerfile

    config = app.config.docker
    login = "" if (config.login or "ecr") == "none" else "ecr"
    if docker_image:
        if no_docker:
            from runctl.errors import UsageError

            raise UsageError("--docker-image and --no-docker exclude each other")
        from runctl.agent.container import registry_host

        host = registry_host(docker_image) or ""
        ours = ".dkr.ecr." in host or (config.registry and host == config.registry)
        app.output.note(f"runctl: using Docker image {docker_image}")
        return JobImage(docker_image, login if ours else "")
    if no_docker or config.enabled is False:
        return None
    root = _common.project_dir()
    found = find_dockerfile(root, config.dockerfile)
    if found is None:
        return None
    where = found.relative_to(root) if found.is_relative_to(root) else found
    app.output.note(f"runctl: using Docker (Dockerfile found at {where}; --no-docker opts out)")
    from runctl.cli._images import build_local, push_built

    cli, image = build_local(app)
    pushed = push_built(app, cli, image, region)
    return JobImage(pushed.ref, login)
