"""runctl aws train with a Dockerfile on real AWS, the image going through real ECR:

    I=$(runctl aws create --spot --instance-type t3.micro --ami ECS_AL2023_AMI --job JOB --wait --output instance-id)
    runctl aws train $I training/train.py --job-id JOB --wait -- --steps 2000 --checkpoint-every 500
    runctl aws terminate $I

The image is built here from training/Dockerfile, pushed to a new ECR repository (named in
[docker] repository), pulled by the instance's agent with the instance role and run; no code
is synced, so the script can only come from the image. The job's weights must equal a
straight local run. The repository and its images are deleted at the end.

Needs a Docker engine here (DOCKER_HOST, else the docker CLI's current context) that can pull
the base image: python:3.11-slim from Docker Hub unless RUNCTL_E2E_BASE_IMAGE names another
(e.g. public.ecr.aws/docker/library/python:3.11-slim). The instance type follows the engine's
architecture (t3.micro for amd64, t4g.micro for arm64). Without an engine the test is
skipped, saying so.

The instance runs the ECS-optimized Amazon Linux 2023 AMI, which has Docker, so that the pull
starts at once; on the default AMI (plain AL2023) the instance's agent installs Docker with dnf
first (runctl.agent.docker_engine).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 2000
ARCHITECTURES = {
    # docker's Server.Arch: (instance types, the type first; the ECS-optimized AL2023 AMI parameter)
    "amd64": (("t3.micro", "t3a.micro", "t2.micro"),
              "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"),
    "arm64": (("t4g.micro", "t4g.small"),
              "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id"),
}


def _context_host(env: dict[str, str]) -> str:
    """The engine endpoint of the docker CLI's current context ('' when it has none)."""
    done = subprocess.run(["docker", "context", "inspect", "--format", "{{.Endpoints.docker.Host}}"], env=env,
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip() if done.returncode == 0 else ""


@pytest.fixture
def docker_env(tmp_path) -> tuple[dict[str, str], str]:
    """(the Docker variables for runctl, the engine's architecture). A private DOCKER_CONFIG
    keeps the ECR login out of the user's own; the engine found with the user's context."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client here: the Docker e2e test builds the image locally")
    host = os.environ.get("DOCKER_HOST") or _context_host(dict(os.environ))
    env = {"DOCKER_CONFIG": str(tmp_path / "docker-config"), **({"DOCKER_HOST": host} if host else {})}
    done = subprocess.run(["docker", "version", "--format", "{{.Server.Arch}}"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"no Docker engine answers ({done.stderr.strip()[-300:]})")
    arch = done.stdout.strip()
    if arch not in ARCHITECTURES:
        pytest.skip(f"the Docker engine builds for {arch!r}; EC2 instances here are amd64 or arm64")
    return env, arch


def test_aws_train_builds_pushes_to_ecr_and_the_instance_runs_the_image(
        docker_env, project, cleanup, e2e_aws, straight_run, e2e):
    """Cost: one t3.micro spot instance (t4g.micro on an arm64 engine) for 10-15 minutes: under
    $0.01 of spot time and CPU credits, a 30 GB gp3 root volume (the ECS-optimized AMI's size)
    for minutes (~$0.001); ECR storage of one small image (python:3.11-slim plus train.py, about
    50 MB) for minutes, and its pull within the region: free in practice. About $0.01 a run,
    10-20 minutes of wall time, plus the local build and the upload of the image."""
    env, arch = docker_env
    types, ami_parameter = ARCHITECTURES[arch]
    reference = straight_run(STEPS)
    ami = e2e_aws.client("ssm").get_parameter(Name=ami_parameter)["Parameter"]["Value"]

    shutil.copy(REPO_ROOT / "training" / "Dockerfile", project.path / "training" / "Dockerfile")
    (project.path / "training" / "nonce.txt").write_text(uuid.uuid4().hex)  # content of its own: a new tag
    repository = cleanup.repository(f"runctl-e2e-{uuid.uuid4().hex[:10]}")
    base = project.settings.base_image
    project.add_config(f'\n[docker]\nrepository = "{repository}"\n'
                       + (f'build_args = ["BASE_IMAGE={base}"]\n' if base else ""))

    job = cleanup.job(e2e.job_id("docker"))
    created = project.runctl.json("aws", "create", "--spot", "--instance-type", types[0],
                                  "--fallback-types", ",".join(types[1:]), "--ami", ami, "--job", job,
                                  "--wait", "--timeout", "600")
    instance_id = cleanup.instance(created["instance_id"])
    assert created["state"] == "running" and created["lifecycle"] == "spot", created

    trained = project.runctl("aws", "train", instance_id, "training/train.py", "--job-id", job, "--wait",
                             "--timeout", "1800", "--", "--steps", STEPS, "--checkpoint-every", "500",
                             check=False, timeout=2400, env=env)
    assert trained.returncode == 0, trained.stderr[-4000:] + "\n" + project.diagnose(instance_id)
    assert "runctl: using Docker (Dockerfile found at training/Dockerfile" in trained.stderr, trained.stderr
    assert "code: uploaded" not in trained.stderr  # not synced: the script can only come from the image
    pushed = re.search(r"runctl: pushed (\S+)", trained.stderr)
    assert pushed, trained.stderr
    ref = pushed.group(1)
    registry = f"{e2e_aws.account}.dkr.ecr.{e2e_aws.region}."
    assert ref.startswith(registry) and f"/{repository}:" in ref, ref
    assert e2e.last_json_line(trained.stdout) == {"final_step": STEPS, "weights_sha256": reference()}

    # The image is in ECR under its content tag, and it is what the job ran in.
    tag = ref.rsplit(":", 1)[1]
    images = e2e_aws.client("ecr").describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    assert images["imageDetails"], images
    prefix = project.store.split("/", 3)[3]  # s3://BUCKET/PREFIX
    spec = json.loads(e2e_aws.client("s3").get_object(
        Bucket=project.bucket, Key=f"{prefix}/jobs/{job}/job.json")["Body"].read())
    assert spec["image"] == ref and spec["registry_login"] == "ecr" and spec.get("code_tree") is None, spec
    status = project.status(job)
    assert status["state"] == "completed" and status["attempts"][-1]["instance_id"] == instance_id, status

    terminated = project.runctl.json("aws", "terminate", instance_id)
    assert terminated["instance_id"] == instance_id
