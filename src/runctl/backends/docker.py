"""Docker: find the Dockerfile, tag by content hash, build, log in, push, and run containers.

A thin adapter over the ``docker`` command line (no docker-py): every call goes through
``DockerCli.run``, which turns the engine's failures into one-line runctl errors:

- the ``docker`` program missing: ``UsageError`` (exit 2), "use --no-docker";
- the engine unreachable: ``RegistryError`` (exit 3) naming DOCKER_HOST;
- a refused login, a failed build or push: ``RegistryError`` with the engine's last line.

The image tag is the first 16 hex digits of a sha256 over the build context (paths and
contents of the files ``.dockerignore`` keeps, plus the Dockerfile), so an unchanged project
builds and pushes nothing. Passwords go to ``docker login --password-stdin``, never on a
command line and never to a log. The pure parts (detection, hashing, naming, the container
command line, GPU choice) are plain functions, tested without an engine.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runctl.backends.aws.instance_types import has_nvidia_gpu
from runctl.codesync.ignore import ALWAYS_EXCLUDED, dockerignore
from runctl.errors import CloudNotFound, RegistryError, UsageError

log = logging.getLogger(__name__)

DOCKERFILE_CANDIDATES = ("Dockerfile", "Dockerfile.train", "docker/Dockerfile", "training/Dockerfile")
NOT_INSTALLED = "docker is not installed; install Docker or use --no-docker"
RUNCTL_LIB_MOUNT = "/opt/runctl-lib"


# -- pure decisions -------------------------------------------------------------------------

def find_dockerfile(root: Path, explicit: str | None = None) -> Path | None:
    """``explicit`` (must exist, else UsageError), else the first of DOCKERFILE_CANDIDATES."""
    if explicit:
        path = (root / explicit) if not Path(explicit).is_absolute() else Path(explicit)
        if not path.is_file():
            raise UsageError(f"Dockerfile not found: {explicit}")
        return path
    for name in DOCKERFILE_CANDIDATES:
        if (root / name).is_file():
            return root / name
    return None


def context_files(root: Path) -> list[str]:
    """The build context's files (relative, sorted) that .dockerignore keeps."""
    excluded = dockerignore(root)
    found = []
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        # An ignored folder is still entered: a later ``!`` line may bring back a file in it.
        dirs[:] = sorted(d for d in dirs if d not in ALWAYS_EXCLUDED)
        for name in files:
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            if name not in ALWAYS_EXCLUDED and not excluded.match_file(rel):
                found.append(rel)
    return sorted(found)


def context_hash(root: Path, dockerfile: Path, build_args: Mapping[str, str] | None = None) -> str:
    """sha256 over the Dockerfile, the build args and every context file's path and content."""
    digest = hashlib.sha256()
    digest.update(b"dockerfile\0" + dockerfile.read_bytes() + b"\0")
    for key in sorted(build_args or {}):
        digest.update(f"arg\0{key}={(build_args or {})[key]}\0".encode())
    for rel in context_files(root):
        path = root / rel
        digest.update(rel.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link\0" + os.readlink(path).encode())
        else:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def content_tag(root: Path, dockerfile: Path, build_args: Mapping[str, str] | None = None) -> str:
    return context_hash(root, dockerfile, build_args)[:16]


def repository_name(name: str) -> str:
    """A valid ECR repository name from a folder name: lower case, [a-z0-9._/-], starting
    with a letter or digit (2-256 characters)."""
    clean = re.sub(r"[^a-z0-9._/-]+", "-", name.lower())
    clean = re.sub(r"[-._/]{2,}", "-", clean).strip("-._/")
    clean = clean or "runctl-job"
    return (clean if len(clean) >= 2 else f"{clean}-image")[:256]


def wants_gpus(setting: str, *, instance_type: str | None = None, has_nvidia_smi: bool = False) -> list[str]:
    """The ``--gpus`` arguments for ``docker run``: ``auto`` gives all GPUs only where the
    machine has NVIDIA's (an NVIDIA GPU instance type, or nvidia-smi present: ``--gpus`` is
    NVIDIA's container toolkit); ``none`` never; ``all`` always; indexes such as ``0,1``
    those devices (quoted as docker needs: the comma would otherwise separate options)."""
    setting = (setting or "auto").strip()
    if setting == "none":
        return []
    if setting == "all":
        return ["--gpus", "all"]
    if setting != "auto":
        return ["--gpus", f'"device={setting.removeprefix("device=")}"']
    if has_nvidia_smi or (instance_type and has_nvidia_gpu(instance_type)):
        return ["--gpus", "all"]
    return []


def container_command(image: str, argv: Sequence[str], env_names: Sequence[str], *, name: str,
                      mounts: Sequence[str], workdir: str = "/workspace", gpus: Sequence[str] = (),
                      network: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``docker run`` for one attempt: attached (the docker client forwards SIGTERM, and
    tini as PID 1 hands it to the script), the folders mounted at the same paths, and the
    environment passed by name (``-e NAME``: values never on the command line)."""
    cmd = ["docker", "run", "--rm", "--init", "--sig-proxy=true", "--name", name, "-w", workdir]
    for folder in mounts:
        cmd += ["-v", f"{folder}:{folder}"]
    for key in env_names:
        cmd += ["-e", key]
    if network:
        cmd += ["--network", network]
    cmd += [*gpus, *extra, image, *argv]
    return cmd


def in_container_argv(argv: Sequence[str], host_python: str, workdir: str) -> list[str]:
    """The host's command as the container runs it: this interpreter becomes ``python`` and
    paths inside the project folder become relative to the image's working folder."""
    out = []
    for i, arg in enumerate(argv):
        if i == 0 and arg == host_python:
            out.append("python")
            continue
        if workdir and arg.startswith(workdir.rstrip("/") + "/"):
            arg = arg[len(workdir.rstrip("/")) + 1:]
        out.append(arg)
    return out


def runctl_lib_dir() -> str:
    """The folder holding the ``runctl`` package, mounted read-only into containers so that
    ``import runctl`` (its in-script API is stdlib-only) works in any image."""
    import runctl

    return str(Path(runctl.__file__).resolve().parent.parent)


# -- the adapter ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Registry:
    host: str  # e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com or 127.0.0.1:5000
    username: str | None = None
    password: str | None = None

    @property
    def is_ecr(self) -> bool:
        return ".dkr.ecr." in self.host

    def ref(self, repository: str, tag: str) -> str:
        return f"{self.host}/{repository}:{tag}"


class DockerCli:
    """Runs ``docker`` with this environment (DOCKER_HOST, DOCKER_CONFIG...)."""

    def __init__(self, env: Mapping[str, str] | None = None, program: str = "docker") -> None:
        self.env = dict(os.environ if env is None else env)
        self.program = program

    @property
    def host(self) -> str:
        return self.env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def run(self, args: Sequence[str], *, what: str, stdin: str | None = None, check: bool = True,
            extra_env: Mapping[str, str] | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, **(extra_env or {})}
        try:
            done = subprocess.run([self.program, *args], input=stdin, capture_output=True, text=True, env=env,
                                  timeout=timeout)
        except FileNotFoundError as exc:
            raise UsageError(NOT_INSTALLED) from exc
        except subprocess.TimeoutExpired as exc:
            raise RegistryError(f"docker {what} took longer than {timeout:g}s") from exc
        if done.returncode != 0:
            self._raise_if_engine_down(done.stderr)
            if check:
                raise RegistryError(f"docker {what} failed: {last_line(done.stderr or done.stdout)}")
        return done

    def _raise_if_engine_down(self, stderr: str) -> None:
        if "Cannot connect to the Docker daemon" in stderr or "Is the docker daemon running" in stderr \
                or "error during connect" in stderr:
            raise RegistryError(f"cannot reach the Docker engine at {self.host}; start it (or set DOCKER_HOST)")

    def ping(self) -> None:
        self.run(["version", "--format", "{{.Server.Version}}"], what="version")

    def image_exists(self, ref: str) -> bool:
        return self.run(["image", "inspect", ref], what="image inspect", check=False).returncode == 0

    def image_env(self, ref: str) -> dict[str, str]:
        done = self.run(["image", "inspect", "--format", "{{json .Config.Env}}", ref], what="image inspect")
        import json

        pairs = json.loads(done.stdout or "null") or []
        return dict(p.split("=", 1) for p in pairs if "=" in p)

    def build(self, context: Path, dockerfile: Path, ref: str, build_args: Mapping[str, str] | None = None) -> str:
        args = ["build", "-f", str(dockerfile), "-t", ref]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        done = self.run([*args, str(context)], what="build", check=False, extra_env={"DOCKER_BUILDKIT": "0"})
        if done.returncode != 0:
            raise RegistryError(build_failure(done.stdout + "\n" + done.stderr))
        return done.stdout

    def tag(self, source: str, target: str) -> None:
        self.run(["tag", source, target], what="tag")

    def login(self, registry: Registry) -> None:
        if registry.username is None:
            return
        done = self.run(["login", "-u", registry.username, "--password-stdin", registry.host], what="login",
                        stdin=registry.password or "", check=False)
        if done.returncode != 0:
            raise RegistryError(f"the registry {registry.host} refused the login as {registry.username}: "
                                f"{last_line(done.stderr)}")

    def push(self, ref: str) -> str:
        done = self.run(["push", ref], what="push", check=False)
        if done.returncode != 0:
            raise RegistryError(f"docker push {ref} failed: {last_line(done.stderr or done.stdout)}")
        return done.stdout

    def pull(self, ref: str) -> None:
        done = self.run(["pull", "-q", ref], what="pull", check=False)
        if done.returncode != 0:
            raise RegistryError(f"docker pull {ref} failed: {last_line(done.stderr or done.stdout)}")

    def remove_container(self, name: str) -> None:
        self.run(["rm", "-f", name], what="rm", check=False)


def last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def build_failure(output: str) -> str:
    """One line for a failed legacy build: the step it stopped at and its last error line."""
    steps = re.findall(r"^Step (\d+/\d+) : (.*)$", output, re.MULTILINE)
    where = f"step {steps[-1][0]} ({steps[-1][1].strip()[:80]})" if steps else "the start"
    lines = [line.strip() for line in output.splitlines() if line.strip() and not line.startswith(" ---> ")]
    error = next((line for line in reversed(lines) if "error" in line.lower() or "returned a non-zero" in line), None)
    return f"docker build failed at {where}: {error or last_line(output)}"


# -- registries: ECR (the default) or any other --------------------------------------------

def ecr_registry(ecr_client, configured_host: str | None = None) -> Registry:
    """Credentials from GetAuthorizationToken; the registry host is the token's proxy
    endpoint, or ``configured_host`` ([docker] registry) when set."""
    from runctl.backends.aws.session import translate

    with translate("ecr:GetAuthorizationToken"):
        data = ecr_client.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    host = configured_host or data["proxyEndpoint"].split("://", 1)[-1].rstrip("/")
    return Registry(host, user, password)


def ensure_ecr_repository(ecr_client, name: str) -> bool:
    """Create the repository when missing; True when it was created."""
    from runctl.backends.aws.session import translate

    try:
        with translate("ecr:DescribeRepositories"):
            ecr_client.describe_repositories(repositoryNames=[name])
        return False
    except CloudNotFound as exc:
        if exc.code != "RepositoryNotFoundException":
            raise
    with translate("ecr:CreateRepository"):
        ecr_client.create_repository(repositoryName=name)
    return True


def tag_in_registry(registry: Registry, repository: str, tag: str, *, ecr_client=None, timeout: float = 10) -> bool:
    """Whether ``repository:tag`` is in the registry: ECR's DescribeImages for ECR, else a
    HEAD on the registry API (``/v2/<repo>/manifests/<tag>``) with the login's credentials."""
    if registry.is_ecr and ecr_client is not None:
        from runctl.backends.aws.session import translate

        try:
            with translate("ecr:DescribeImages"):
                ecr_client.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
            return True
        except CloudNotFound as exc:
            if exc.code in ("ImageNotFoundException", "RepositoryNotFoundException"):
                return False
            raise
    import urllib.error
    import urllib.request

    local = registry.host.split(":")[0] in ("127.0.0.1", "localhost", "::1")
    url = f"{'http' if local else 'https'}://{registry.host}/v2/{repository}/manifests/{tag}"
    request = urllib.request.Request(url, method="HEAD", headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"})
    if registry.username is not None:
        token = base64.b64encode(f"{registry.username}:{registry.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        if exc.code in (401, 403):
            who = f"as {registry.username}" if registry.username else "(no credentials: [docker] login = none)"
            raise RegistryError(f"the registry {registry.host} refused the login {who} (HTTP {exc.code})") from exc
        raise RegistryError(f"the registry {registry.host} answered HTTP {exc.code} for {repository}:{tag}") from exc
    except OSError as exc:
        raise RegistryError(f"cannot reach the registry {registry.host}: {exc}") from exc
