"""Real AWS, opt-in: RUNCTL_E2E=1 pytest tests/e2e (run on their own: the moto fixtures of
the other tests point every AWS client at moto for the rest of a session).

Cost: one t3.micro spot instance (falling back to t3a.micro / t2.micro) for a few minutes,
about $0.003 an hour plus a few minutes of an 8 GB volume: well under $0.01 per run. Every
instance is terminated at the end, also when a step fails; ``runctl resources list``
shows anything left behind.

Needs credentials with the ``runctl aws iam-policy --for cli`` permissions. Region:
RUNCTL_E2E_REGION, else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("RUNCTL_E2E") != "1", reason="real AWS: opt in with RUNCTL_E2E=1"),
]


@pytest.fixture
def real_aws(tmp_path, cli_env):
    if os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1"):
        pytest.skip("AWS_ENDPOINT_URL points at moto: run the e2e tests on their own")
    region = (os.environ.get("RUNCTL_E2E_REGION") or os.environ.get("AWS_REGION")
              or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    project = tmp_path / "e2e-project"
    project.mkdir()

    def runctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "runctl", *args, "--region", region], cwd=project,
                              env=cli_env, capture_output=True, text=True, timeout=600)
        if check:
            assert done.returncode == 0, f"runctl {' '.join(args)} exited {done.returncode}: {done.stderr}"
        return done

    return runctl


def test_create_wait_status_terminate(real_aws):
    created = real_aws("aws", "create", "--instance-type", "t3.micro", "--fallback-types", "t3a.micro,t2.micro",
                       "--spot", "--job", "e2e-quickstart", "--wait", "--timeout", "300", "--output", "json")
    info = json.loads(created.stdout)
    instance_id = info["instance_id"]
    try:
        assert info["state"] == "running" and info["lifecycle"] == "spot"
        assert info["tags"]["runctl:job"] == "e2e-quickstart" and "runctl:created" in info["tags"]
        status = json.loads(real_aws("aws", "status", instance_id, "--output", "json").stdout)
        assert status["instance_id"] == instance_id and status["state"] == "running"
        listed = json.loads(real_aws("resources", "list", "--job", "e2e-quickstart", "--output", "json").stdout)
        assert instance_id in [r["id"] for r in listed]
    finally:
        real_aws("aws", "terminate", instance_id, check=False)
    waited = real_aws("aws", "wait", instance_id, "--state", "terminated", "--timeout", "300", "--output", "json")
    assert json.loads(waited.stdout)["state"] == "terminated"
