"""The quick start's create / status / terminate on real AWS, without an agent (no store):

    runctl aws create --spot --instance-type t3.micro --fallback-types t3a.micro,t2.micro --job e2e-quickstart --wait
    runctl aws status INSTANCE_ID
    runctl resources list --job e2e-quickstart
    runctl aws terminate INSTANCE_ID && runctl aws wait INSTANCE_ID --state terminated

Opt-in like every test here (RUNCTL_E2E=1, see conftest.py and docs/E2E_TESTS.md). Needs
credentials with the ``runctl aws iam-policy --for cli`` permissions; no bucket, no role.
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def test_create_wait_status_terminate(real_aws):
    """Cost: one t3.micro spot instance (falling back to t3a.micro / t2.micro) for a few minutes,
    about $0.003 an hour plus a few minutes of an 8 GB volume: well under $0.01 per run, 3-6
    minutes. The instance is terminated at the end, also when a step fails; ``runctl resources
    list`` shows anything left behind."""
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
