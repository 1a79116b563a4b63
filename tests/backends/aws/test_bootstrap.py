"""The user-data bootstrap: values survive quoting byte-exact (bash agrees with the parser the
fake cloud uses), no credentials in it, and the script itself installs the wheel into a venv
and starts a resident agent that beats in the store (run here, with nohup, in tmp)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runctl.backends.aws.bootstrap import (
    VALUES_BEGIN,
    VALUES_END,
    agent_command_from_user_data,
    agent_env_from_user_data,
    bootstrap_user_data,
    render_user_data,
    store_url_for,
    watchdog_from_user_data,
)
from runctl.errors import UsageError
from runctl.testing.imds import imds  # noqa: F401 (the IMDS emulator fixture)
from waiting import wait_for

WHEEL_URL = "https://bucket.s3.amazonaws.com/runctl/dist/0123/runctl-0.1.0-py3-none-any.whl?X-Amz-Signature=ab&x=1"
NAMES = ("RUNCTL_PREFIX", "RUNCTL_AGENT_LOG", "RUNCTL_WHEEL_URL", "RUNCTL_WHEEL_FILE", "RUNCTL_WHEEL_SHA256",
         "RUNCTL_SERVICE", "RUNCTL_REGION")


def values_block(text: str) -> str:
    return text[text.index(VALUES_BEGIN):text.index(VALUES_END)]


def bash_values(text: str) -> tuple[dict[str, str], list[str], list[str]]:
    """Run the values block in bash; return its scalars, env array and command array as bash sees them."""
    script = values_block(text) + "\n" + "".join(f"printf '%s\\0' \"${name}\"\n" for name in NAMES) + (
        'printf "%s\\0" "${#RUNCTL_AGENT_ENV[@]}" ${RUNCTL_AGENT_ENV[@]+"${RUNCTL_AGENT_ENV[@]}"}\n'
        'printf "%s\\0" "${RUNCTL_AGENT_COMMAND[@]}"\n')
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    items = out.decode("utf-8", "surrogateescape").split("\0")[:-1]
    scalars = dict(zip(NAMES, items))
    count = int(items[len(NAMES)])
    env = items[len(NAMES) + 1:len(NAMES) + 1 + count]
    return scalars, env, items[len(NAMES) + 1 + count:]


text_values = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(store=text_values, region=text_values, url_part=text_values, value=text_values,
       spot=st.sampled_from([None, True, False]))
def test_every_value_survives_quoting_byte_exact(store, region, url_part, value, spot):
    wheel_url = f"https://h/{url_part}/runctl-0.1.0-py3-none-any.whl?q={url_part}"
    text = render_user_data(wheel_url=wheel_url, wheel_filename="runctl-0.1.0-py3-none-any.whl", store_url=store,
                            region=region, spot_notices=spot, env={"RUNCTL_HOME": value, "X_1": store})
    scalars, env, command = bash_values(text)
    assert scalars["RUNCTL_WHEEL_URL"] == wheel_url
    assert scalars["RUNCTL_WHEEL_FILE"] == "runctl-0.1.0-py3-none-any.whl"
    assert scalars["RUNCTL_REGION"] == region
    assert env == [f"RUNCTL_HOME={value}", f"X_1={store}"]
    expected = ["/opt/runctl/venv/bin/python", "-m", "runctl.agent.resident", "--store", store, "--region", region]
    if spot is not None:
        expected.append("--spot-notices" if spot else "--no-spot-notices")
    assert command == expected
    # The harness's parser reads exactly what bash runs.
    assert agent_command_from_user_data(text) == command
    assert agent_command_from_user_data(text, python="/usr/bin/python3")[0] == "/usr/bin/python3"
    assert agent_env_from_user_data(text) == {"RUNCTL_HOME": value, "X_1": store}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(store=text_values, job=text_values)
def test_a_group_instance_runs_its_job_and_arms_the_boot_watchdog_byte_exact(store, job):
    text = render_user_data(wheel_url=WHEEL_URL, wheel_filename="runctl-0.1.0-py3-none-any.whl", store_url=store,
                            region="eu-west-1", job=job, boot_timeout_s=600)
    script = values_block(text) + '\nprintf "%s\\0" "$RUNCTL_BOOT_TIMEOUT" "${RUNCTL_WATCHDOG_COMMAND[@]}"\n'
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    timeout, *watchdog = out.decode("utf-8", "surrogateescape").split("\0")[:-1]
    assert timeout == "600"
    assert watchdog == ["/opt/runctl/venv/bin/python", "-m", "runctl.agent.boot_watchdog", "--store", store,
                        "--job", job, "--region", "eu-west-1"]
    assert watchdog_from_user_data(text) == (watchdog, 600.0)
    assert agent_command_from_user_data(text)[-2:] == ["--job", job]


def test_no_watchdog_without_a_job_and_the_idle_timeout_reaches_the_agent():
    plain = render_user_data(wheel_url=WHEEL_URL, store_url="s3://b/runctl", idle_timeout_s=3600)
    assert watchdog_from_user_data(plain) == ([], None)
    assert agent_command_from_user_data(plain)[-2:] == ["--idle-timeout", "3600"]
    kept = render_user_data(wheel_url=WHEEL_URL, store_url="s3://b/runctl")
    assert "--idle-timeout" not in agent_command_from_user_data(kept)
    assert "shutdown -h" in plain  # the fallback shutdown is in the script, armed only with a boot timeout


def test_the_script_is_valid_bash_and_its_values_are_the_only_interpolations():
    text = render_user_data(wheel_url=WHEEL_URL, store_url="s3://b/runctl", region="eu-west-1",
                            wheel_sha256="a" * 64)
    subprocess.run(["bash", "-n"], input=text.encode(), check=True)
    assert text.startswith("#!/bin/bash\n") and "set -euo pipefail" in text
    other = render_user_data(wheel_url=WHEEL_URL.replace("0123", "4567"), store_url="s3://other/x", region="us-west-2")
    # Outside the values block the two scripts are the same text.
    strip = lambda t: t.replace(values_block(t), "")  # noqa: E731
    assert strip(text) == strip(other)


def test_no_credentials_in_the_user_data(s3_store, monkeypatch):
    secret = "Sup3rSecretKeyThatMustNeverLeak/0123456789abcdefghij"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "SessionTokenThatMustNeverLeak0001")
    from runctl.store.s3 import S3Store

    store = S3Store(s3_store.bucket, "runctl")  # a new client: it would sign with the keys above
    text = bootstrap_user_data(store, region="us-east-1", env={"RUNCTL_HOME": "/data/runctl"})
    for leak in (secret, secret.replace("/", "%2F"), "AKIAEXAMPLEKEYID0001", "SessionTokenThatMustNeverLeak0001",
                 "X-Amz-", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"):
        assert leak not in text
    # The wheel is read with the instance role, from where publish_wheel put it.
    url_line = next(line for line in text.splitlines() if line.startswith("RUNCTL_WHEEL_URL="))
    assert url_line.startswith(f"RUNCTL_WHEEL_URL=s3://{s3_store.bucket}/runctl/dist/")
    assert agent_command_from_user_data(text)[3:5] == ["--store", "s3://%s/runctl" % s3_store.bucket]
    # Asked for, a presigned URL instead: the key id then rides in X-Amz-Credential, never the secret.
    signed = bootstrap_user_data(store, region="us-east-1", presign=True)
    assert "X-Amz-Credential=AKIAEXAMPLEKEYID0001" in signed and "X-Amz-Expires=43200" in signed
    assert secret not in signed and secret.replace("/", "%2F") not in signed


def test_the_s3_fetch_reads_the_wheel_with_the_ambient_credentials(s3_store, tmp_path):
    """The bootstrap's s3:// download step, as the instance runs it (boto3, role credentials;
    here moto's)."""
    from runctl.backends.aws.bootstrap import S3_FETCH
    from runctl.backends.aws.wheel import publish_wheel

    wheel = publish_wheel(s3_store)
    dest = tmp_path / wheel.filename
    subprocess.run([sys.executable, "-c", S3_FETCH, f"{s3_store.url}/{wheel.key}", str(dest)], check=True,
                   timeout=60)
    assert dest.read_bytes() == s3_store.read(wheel.key).data


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "HF_TOKEN",
                                  "WANDB_API_SECRET", "DB_PASSWORD", "bad name", "1X"])
def test_credential_or_bad_env_names_are_refused(name):
    with pytest.raises(UsageError):
        render_user_data(wheel_url=WHEEL_URL, store_url="s3://b/p", env={name: "x"})


def test_refuses_values_bash_cannot_hold_and_unsafe_prefixes():
    with pytest.raises(UsageError, match="NUL"):
        render_user_data(wheel_url=WHEEL_URL, store_url="s3://b/\0p")
    with pytest.raises(UsageError, match="prefix"):
        render_user_data(wheel_url=WHEEL_URL, store_url="s3://b/p", prefix="/opt/run ctl")
    with pytest.raises(UsageError, match=".whl"):
        render_user_data(wheel_url="https://h/x?y=1", store_url="s3://b/p")


def test_store_url_for():
    assert store_url_for("my-bucket") == "s3://my-bucket/runctl"
    assert store_url_for("my-bucket", "s3://other/p") == "s3://other/p"
    assert store_url_for("my-bucket", None, "s3://conf/p") == "s3://conf/p"
    assert store_url_for("my-bucket", None, "/local/folder") == "s3://my-bucket/runctl"
    with pytest.raises(UsageError, match="s3_bucket"):
        store_url_for(None)


def test_the_bootstrap_installs_the_wheel_and_starts_the_agent(tmp_path, local_store, imds, cli_env):
    """The real script, here: venv in tmp, wheel from a file:// URL, nohup; the agent finds its
    instance id at the IMDS emulator and beats into the store."""
    from runctl.agent.assignment import read_agent_record
    from runctl.backends.aws.wheel import publish_wheel

    wheel = publish_wheel(local_store)
    prefix, log = tmp_path / "opt", tmp_path / "agent.log"
    deps = sysconfig.get_paths()["purelib"]  # the agent's dependencies, as PyPI would give them
    text = render_user_data(wheel_url=wheel.url, wheel_sha256=wheel.sha256, store_url=local_store.url,
                            region="us-east-1", spot_notices=False, prefix=str(prefix), agent_log=str(log),
                            service="nohup", env={"RUNCTL_HOME": str(tmp_path / "home"), "PYTHONPATH": deps})
    script = tmp_path / "user-data.sh"
    script.write_text(text)
    env = {**cli_env, "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + cli_env["PATH"],
           "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "started the agent" in done.stderr
    record = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and record is None:
            record = read_agent_record(local_store, imds.instance_id)
            time.sleep(0.1)
        assert record is not None, log.read_text() if log.exists() else "no agent log"
        assert record["state"] == "idle" and record["instance_type"] == imds.instance_type
        assert record["python"] == str(prefix / "venv" / "bin" / "python")
        launcher = (prefix / "run-agent").read_text()
        assert launcher.startswith("#!/bin/bash") and str(log) in launcher
    finally:
        if record is not None:
            os.kill(record["pid"], signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and read_agent_record(local_store, imds.instance_id)["state"] != "stopped":
                time.sleep(0.1)
    assert read_agent_record(local_store, imds.instance_id)["state"] == "stopped"
    # The agent records "stopped" in the store, then logs it: on a busy machine the line
    # comes a moment after the record.
    wait_for("the agent to log its stop", lambda: "resident agent stopped" in log.read_text(), timeout=15)
