"""Real-AWS end-to-end tests: opt in with ``RUNCTL_E2E=1``; skipped otherwise (CI never sets it).

Without RUNCTL_E2E=1 every test in this folder is marked skipped at collection: no fixture
runs and nothing heavier than pytest is imported (boto3 and runctl only inside fixtures).
Run them on their own, ``RUNCTL_E2E=1 pytest tests/e2e``: the moto fixtures of the other
tests point every AWS client at moto for the rest of a session. docs/E2E_TESTS.md lists the
permissions they need, what each costs, and how to clean up after a run that was killed.

Settings, read when this file is imported (the root conftest's autouse fixture removes every
RUNCTL_* variable from the environment before each test runs):

    RUNCTL_E2E=1               run the tests
    RUNCTL_E2E_REGION          region (else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1)
    RUNCTL_E2E_BUCKET          job bucket (default runctl-e2e-ACCOUNT-REGION, made by runctl aws setup)
    RUNCTL_E2E_INSTANCE_ROLE   instance role and profile (default runctl-e2e-instance, idem)
    RUNCTL_E2E_INSTANCE_TYPES  the instance type, then its fallbacks (default t3.micro,t3a.micro,t2.micro)
    RUNCTL_E2E_STEPS           steps of the job interrupted in the auto-resume test (default 200000)
    RUNCTL_E2E_BASE_IMAGE      BASE_IMAGE build argument of the Docker test (default: training/Dockerfile's)
    RUNCTL_E2E_SUBNET_IDS      subnets to launch in, comma-separated (default: the default VPC's)
    RUNCTL_E2E_SECURITY_GROUP_IDS  security groups of the instances (default: the VPC's default group)

Fixtures:

- ``region`` (session): the region every test works in.
- ``e2e_aws`` (session): credentials checked (``sts:GetCallerIdentity``); account, partition,
  boto3 clients in the region. Skips when AWS_ENDPOINT_URL is set (moto).
- ``e2e_setup`` (session): ``runctl aws setup`` once (job bucket, instance role and profile,
  both kept for the next run); the ``[aws]`` keys every project gets.
- ``real_aws``: ``real_aws(*args, check=True)`` runs ``python -m runctl ARGS`` in an empty
  folder (no store, no agent on the instances).
- ``project``: a user's project (training/train.py, README.md, .runctl.toml with the setup's
  keys) and its runner: ``project.runctl(*args)``, ``.json(*args)``, ``.start(*args)``,
  ``project.status(job)``, ``.snapshots(job)``, ``.progress(job, attempt)``, ``.diagnose(id)``.
- ``cleanup``: what a test launched (jobs, instances, background runctl processes, ECR
  repositories), removed when the test ends however it ends; a teardown error lists anything
  that could not be removed.
- ``fis``: spot interruptions through AWS FIS: an experiment role made at setup, one template
  and experiment per ``fis.interrupt(instance_id)``; all deleted at teardown.
- ``straight_run``: ``straight_run(steps)`` starts training/train.py here, in the background,
  and returns a function giving its weights_sha256 (the reference for the cloud runs).
- ``wait_until``: poll a predicate until it is truthy, failing on a timeout or when a background
  runctl exits first.
- ``e2e`` (session): small helpers: ``job_id(kind)``, ``last_json_line(text)``, ``iso_epoch(text)``.

The classes behind them are in e2e_runctl.py (Runctl, Project, Cleanup, ...) and e2e_fis.py
(Fis); like this file they import only the standard library at the top.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TRAIN_SCRIPT = REPO / "training" / "train.py"
if str(HERE) not in sys.path:  # pytest's default import mode puts it there; --import-mode=importlib does not
    sys.path.insert(0, str(HERE))

from e2e_fis import Fis  # noqa: E402  (standard library only, like e2e_runctl)
from e2e_runctl import (STORE_PREFIX, Aws, Background, Cleanup, Project, Runctl, Settings,  # noqa: E402
                        iso_epoch, job_id, last_json_line, network_config, words, write_config)

ENABLED = os.environ.get("RUNCTL_E2E") == "1"
REGION = (os.environ.get("RUNCTL_E2E_REGION") or os.environ.get("AWS_REGION")
          or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
BUCKET = os.environ.get("RUNCTL_E2E_BUCKET", "")
INSTANCE_ROLE = os.environ.get("RUNCTL_E2E_INSTANCE_ROLE") or "runctl-e2e-instance"
INSTANCE_TYPES = os.environ.get("RUNCTL_E2E_INSTANCE_TYPES") or "t3.micro,t3a.micro,t2.micro"
STEPS = os.environ.get("RUNCTL_E2E_STEPS") or "200000"
BASE_IMAGE = os.environ.get("RUNCTL_E2E_BASE_IMAGE", "")
SUBNET_IDS = os.environ.get("RUNCTL_E2E_SUBNET_IDS", "")
SECURITY_GROUP_IDS = os.environ.get("RUNCTL_E2E_SECURITY_GROUP_IDS", "")

SKIP_REASON = "real AWS: opt in with RUNCTL_E2E=1 (docs/E2E_TESTS.md)"
IAM_SETTLE_S = 15.0  # a new instance profile is not usable everywhere at once


def pytest_collection_modifyitems(config, items):
    """Mark this folder's tests e2e, and skip them all unless RUNCTL_E2E=1."""
    skip = None if ENABLED else pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE not in Path(str(item.path)).resolve().parents:
            continue
        item.add_marker(pytest.mark.e2e)
        if skip is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def e2e():
    """Small helpers for the tests: ``e2e.job_id(kind)``, ``e2e.last_json_line(text)``,
    ``e2e.iso_epoch(text)``."""
    from types import SimpleNamespace

    return SimpleNamespace(job_id=job_id, last_json_line=last_json_line, iso_epoch=iso_epoch)


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a runctl subprocess: the caller's AWS credentials, no RUNCTL_* /
    TRAINCTL_* variable, a private XDG_CONFIG_HOME, and the e2e region."""
    xdg = home / ".xdg-config"
    xdg.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    env.update(XDG_CONFIG_HOME=str(xdg), AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION)
    return env


@pytest.fixture
def wait_until():
    """``wait_until(what, predicate, timeout=..., interval=5, proc=None, context=None)``: the
    predicate's first truthy value. Fails after ``timeout`` seconds (adding ``context()``, e.g.
    the agent's log) or when ``proc`` (a Background) exits first (showing its output)."""

    def wait(what: str, predicate: Callable[[], Any], *, timeout: float, interval: float = 5.0,
             proc: Background | None = None, context: Callable[[], str] | None = None) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if proc is not None and proc.poll() is not None:
                pytest.fail(f"runctl exited ({proc.returncode}) while waiting for {what}:\n{proc.tail()}")
            if time.monotonic() >= deadline:
                extra = context() if context is not None else ""
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}" + (f"\n{extra}" if extra else ""))
            time.sleep(interval)

    return wait


@pytest.fixture(scope="session")
def region() -> str:
    return REGION


@pytest.fixture(scope="session")
def e2e_aws(region) -> Aws:
    if os.environ.get("AWS_ENDPOINT_URL"):
        pytest.skip("AWS_ENDPOINT_URL is set (moto?): the e2e tests talk to real AWS; run them on their own")
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = boto3.session.Session(region_name=region)
    try:
        who = session.client("sts", region_name=region).get_caller_identity()
    except (BotoCoreError, ClientError) as exc:
        pytest.fail(f"RUNCTL_E2E=1 but no usable AWS credentials ({exc}); see docs/E2E_TESTS.md")
    return Aws(region, session, who["Account"], who["Arn"].split(":")[1], who["Arn"])


@pytest.fixture(scope="session")
def e2e_settings() -> Settings:
    types = tuple(t.strip() for t in INSTANCE_TYPES.split(",") if t.strip())
    if not types:
        pytest.fail("RUNCTL_E2E_INSTANCE_TYPES names no instance type")
    try:
        steps = int(STEPS)
    except ValueError:
        pytest.fail(f"RUNCTL_E2E_STEPS={STEPS!r} is not a number of steps")
    return Settings(types, steps, BASE_IMAGE, words(SUBNET_IDS), words(SECURITY_GROUP_IDS))


@pytest.fixture(scope="session")
def e2e_setup(e2e_aws, tmp_path_factory) -> dict:
    """``runctl aws setup`` once per session: the job bucket and the instance role/profile
    (made when missing, kept afterwards). Returns the [aws] keys it recorded."""
    folder = tmp_path_factory.mktemp("e2e-setup")
    runner = Runctl(folder, cli_env(folder), folder / "logs")
    bucket = BUCKET or f"runctl-e2e-{e2e_aws.account}-{e2e_aws.region}"
    report = runner.json("aws", "setup", "--region", e2e_aws.region, "--bucket", bucket, "--role", INSTANCE_ROLE,
                         timeout=300)
    made = [s for s in report["steps"] if s["done"] and s["action"] in ("create", "add role")]
    if any(s["resource"] in ("iam role", "instance profile") for s in made):
        time.sleep(IAM_SETTLE_S)  # EC2 refuses a brand-new instance profile for a few seconds
    return report["keys"]


@pytest.fixture
def cleanup(e2e_aws):
    """The test's Cleanup; it runs after the test, however the test ended."""
    box = Cleanup(e2e_aws)
    try:
        yield box
    finally:
        problems = box.run()
        if problems:
            pytest.fail("e2e cleanup left something behind (see docs/E2E_TESTS.md, 'Cleaning up'):\n  "
                        + "\n  ".join(problems), pytrace=False)


# -- the runners ----------------------------------------------------------------------------
@pytest.fixture
def real_aws(tmp_path, e2e_aws, e2e_settings):
    """``real_aws(*args, check=True)``: runctl in an empty folder (no store: instances get no
    agent); the region comes from the environment."""
    folder = tmp_path / "e2e-project"
    folder.mkdir()
    network = network_config(e2e_settings)
    if network:
        (folder / ".runctl.toml").write_text("\n".join(["[aws]", *network, ""]))
    runner = Runctl(folder, cli_env(tmp_path), tmp_path / "logs")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return runner(*args, check=check, timeout=600)

    return run


@pytest.fixture
def project(tmp_path, e2e_aws, e2e_setup, e2e_settings, cleanup) -> Project:
    folder = tmp_path / "project"
    (folder / "training").mkdir(parents=True)
    shutil.copy(TRAIN_SCRIPT, folder / "training" / "train.py")
    (folder / "README.md").write_text("a user's project (runctl e2e)\n")
    write_config(folder, e2e_setup, e2e_settings)
    runner = Runctl(folder, cli_env(tmp_path), tmp_path / "logs")
    bucket = e2e_setup["s3_bucket"]
    cleanup.runctl = runner
    cleanup.store = (bucket, STORE_PREFIX)
    return Project(folder, runner, f"s3://{bucket}/{STORE_PREFIX}", bucket, e2e_aws.region, e2e_settings)


@pytest.fixture
def straight_run(tmp_path):
    """``straight_run(steps)``: start ``training/train.py --steps N`` here, without runctl, in
    the background; returns ``result()``, which waits for it and gives its weights_sha256."""
    procs: list[subprocess.Popen] = []

    def start(steps: int) -> Callable[[], str]:
        folder = tmp_path / f"straight-{steps}"
        folder.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
        out = open(folder / "stdout", "w")
        err = open(folder / "stderr", "w")
        with out, err:
            proc = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), "--steps", str(steps)], cwd=folder, env=env,
                                    stdout=out, stderr=err)
        procs.append(proc)

        def result(timeout: float = 3600) -> str:
            code = proc.wait(timeout)
            assert code == 0, (folder / "stderr").read_text()[-3000:]
            return last_json_line((folder / "stdout").read_text())["weights_sha256"]

        return result

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def fis(e2e_aws):
    """A Fis whose experiment role exists from the start (IAM settles while the instance
    boots); the experiments, templates and the role are removed at the end."""
    helper = Fis(e2e_aws, uuid.uuid4().hex[:10])
    try:
        helper.make_role()
        yield helper
    finally:
        problems = helper.close()
        if problems:
            pytest.fail("FIS cleanup left something behind (see docs/E2E_TESTS.md, 'Cleaning up'):\n  "
                        + "\n  ".join(problems), pytrace=False)
