"""The project's image: build it once per content, push it once per registry.

``build_image`` tags the image by the content hash of its build context and builds only
when that tag is missing locally. ``push_image`` creates the ECR repository when missing,
logs in (GetAuthorizationToken + ``docker login --password-stdin``) and pushes only when the
tag is not in the registry yet. ``registry_for`` reads the ``[docker]`` configuration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from runctl.backends.docker import (DockerCli, Registry, content_tag, ecr_registry, ensure_ecr_repository,
                                    find_dockerfile, repository_name, tag_in_registry)
from runctl.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltImage:
    dockerfile: Path
    repository: str
    tag: str
    built: bool  # False: the tag existed, nothing was built

    @property
    def local_ref(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class PushedImage:
    ref: str  # registry/repository:tag
    pushed: bool  # False: the registry had the tag already
    created_repository: bool = False


def parse_build_args(pairs) -> dict[str, str]:
    args = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid build argument {pair!r}: use KEY=VALUE")
        args[key] = value
    return args


def build_image(cli: DockerCli, root: Path, *, dockerfile: str | None = None, repository: str | None = None,
                tag: str | None = None, build_args: dict[str, str] | None = None) -> BuiltImage:
    found = find_dockerfile(root, dockerfile)
    if found is None:
        raise UsageError(f"no Dockerfile in {root} (looked for Dockerfile, Dockerfile.train, docker/Dockerfile, "
                         "training/Dockerfile); give one with --dockerfile")
    repo = repository_name(repository or root.resolve().name)
    tag = tag or content_tag(root, found, build_args)
    image = BuiltImage(found, repo, tag, built=False)
    if cli.image_exists(image.local_ref):
        log.info("image %s exists; not building", image.local_ref)
        return image
    cli.build(root, found, image.local_ref, build_args)
    return BuiltImage(found, repo, tag, built=True)


def registry_for(docker_config, aws_session=None) -> tuple[Registry, object | None]:
    """The registry to push to and the ECR client used (None when ``login = none``)."""
    if (docker_config.login or "ecr") == "none":
        if not docker_config.registry:
            raise UsageError("[docker] login = none needs [docker] registry")
        return Registry(docker_config.registry), None
    if aws_session is None:
        raise UsageError("pushing to ECR needs an AWS session")
    ecr = aws_session.client("ecr")
    return ecr_registry(ecr, docker_config.registry), ecr


def push_image(cli: DockerCli, image: BuiltImage, registry: Registry, *, ecr_client=None) -> PushedImage:
    created = ensure_ecr_repository(ecr_client, image.repository) if ecr_client is not None else False
    cli.login(registry)
    ref = registry.ref(image.repository, image.tag)
    if tag_in_registry(registry, image.repository, image.tag, ecr_client=ecr_client):
        log.info("%s is in the registry already; not pushing", ref)
        return PushedImage(ref, pushed=False, created_repository=created)
    cli.tag(image.local_ref, ref)
    cli.push(ref)
    return PushedImage(ref, pushed=True, created_repository=created)


def pull_image(cli: DockerCli, ref: str, registry: Registry | None) -> bool:
    """Make ``ref`` available locally (log in and pull when missing). True when pulled."""
    if cli.image_exists(ref):
        return False
    if registry is not None:
        cli.login(registry)
    cli.pull(ref)
    return True
