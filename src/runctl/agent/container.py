"""An attempt in a container: the agent supervises ``docker run`` as it would the script.

``docker run`` stays attached, so the docker client is the agent's child: the stop signal
sent to its process group is forwarded to the container (``--sig-proxy``), where ``tini``
(``--init``) hands it to the script. The checkpoint folder and the attempt's run folder
(interrupt and progress files) are mounted at the same paths, the job's environment is
passed by name (with ``--sync-code`` the synced project is mounted over the image's
/workspace; without it a checkpoint folder of the project is mounted at its place in
/workspace too), and runctl's own package is mounted read-only on PYTHONPATH so that
``import runctl`` works in any image. When the attempt ends, the container is removed
(``docker rm -f``): after a SIGKILL of the client it would otherwise go on running.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from runctl.agent.docker_engine import ensure_engine
from runctl.backends.docker import (RUNCTL_LIB_MOUNT, DockerCli, container_command, in_container_argv,
                                    runctl_lib_dir, wants_gpus)
from runctl.models import JobSpec

PASSED_PREFIXES = ("RUNCTL_", "TRAINCTL_")
WORKDIR = "/workspace"  # where the job runs in its container, and where images keep the project


class ContainerAttempt:
    def __init__(self, spec: JobSpec, run_dir: Path, number: int, cli: DockerCli | None = None) -> None:
        assert spec.image
        self.spec = spec
        self.run_dir = run_dir
        self.cli = cli or DockerCli()
        self.name = f"runctl-{spec.job_id[:80]}-{number}-{uuid.uuid4().hex[:6]}"

    def wrap(self, argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """The host command and environment that run ``argv`` in the job's image."""
        env = dict(env)
        image_env = self.cli.image_env(self.spec.image)
        image_path = image_env.get("PYTHONPATH")
        env["PYTHONPATH"] = RUNCTL_LIB_MOUNT + (f":{image_path}" if image_path else "")
        names = sorted({*self.spec.env, *self.spec.secrets, "PYTHONPATH", "PYTHONUNBUFFERED",
                        *(k for k in env if k.startswith(PASSED_PREFIXES))})
        args = list(self.spec.docker_args)
        has_nvidia_smi = shutil.which("nvidia-smi") is not None
        gpus = [] if "--gpus" in args else wants_gpus(self.spec.gpus, has_nvidia_smi=has_nvidia_smi)
        mounts = [self.spec.checkpoint_dir, str(self.run_dir)]
        extra = ["-v", f"{runctl_lib_dir()}/runctl:{RUNCTL_LIB_MOUNT}/runctl:ro", *args]
        folder, workdir = Path(self.spec.checkpoint_dir), Path(self.spec.workdir)
        if self.spec.code_tree:  # --sync-code: the synced project replaces the image's copy
            extra = ["-v", f"{self.spec.workdir}:{WORKDIR}", *extra]
        elif workdir in folder.parents:
            # A checkpoint folder of the project (--checkpoint-dir checkpoints) with the image's
            # copy of the project: it must be there too, where the script writes it relative
            # to /workspace and where the resume arguments, made relative, lead.
            extra = ["-v", f"{folder}:{WORKDIR}/{folder.relative_to(workdir).as_posix()}", *extra]
        inner = in_container_argv(argv, sys.executable, self.spec.workdir)
        command = container_command(self.spec.image, inner, names, name=self.name, mounts=mounts,
                                    workdir=WORKDIR, gpus=gpus, extra=extra)
        command[0] = shutil.which("docker") or "docker"
        return command, env

    def cleanup(self) -> None:
        self.cli.remove_container(self.name)


def registry_host(image: str) -> str | None:
    """The registry part of an image reference (``host[:port]/repo:tag``), None for Docker Hub."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def pull_job_image(spec: JobSpec, *, region: str | None = None, cli: DockerCli | None = None) -> str:
    """On the instance, before the job's first attempt: make sure a Docker engine runs
    (installed when missing, see docker_engine), log in to the image's registry with
    this machine's credentials (ECR: GetAuthorizationToken, the password through
    ``docker login --password-stdin``) and ``docker pull`` the image. Returns what it did."""
    from runctl.backends.docker import Registry, ecr_registry

    assert spec.image
    cli = cli or DockerCli()
    engine = ensure_engine(cli)
    host = registry_host(spec.image)
    registry: Registry | None = None
    if host and spec.registry_login == "ecr":
        from runctl.backends.aws.session import AwsSession

        session = AwsSession(region or _default_region())
        registry = ecr_registry(session.client("ecr"), host)
    if registry is not None:
        cli.login(registry)
    cli.pull(spec.image)
    did = f"logged in to {host} as {registry.username}, pulled {spec.image}" if registry else f"pulled {spec.image}"
    return f"{engine}, {did}" if engine else did


def _default_region() -> str:
    import os

    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
