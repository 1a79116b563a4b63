"""runctl run --env/--secret through the real CLI: values reach the script; a secret, read by
the agent with the user's credentials (moto's SSM here), is written nowhere by runctl: not
in the store, the job's local files, the output or --output json. Bad items are one line,
exit 2; a secret that cannot be read is one line naming it, exit 3."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest

VALUE = "s3cr3t-of-the-local-run"

SHOW = """\
import hashlib, json, os
print(json.dumps({"greeting": os.environ.get("GREETING"), "plain": os.environ.get("PLAIN"),
                  "token_sha256": hashlib.sha256(os.environ.get("TOKEN", "").encode()).hexdigest()}))
"""


def printed(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{") and "token_sha256" in line][-1])


def files_holding(folder, value: str) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and value.encode() in p.read_bytes())


@pytest.fixture
def token(moto_reset):
    boto3.client("ssm", region_name="us-east-1").put_parameter(Name="/runctl/token", Value=VALUE, Type="SecureString")
    return hashlib.sha256(VALUE.encode()).hexdigest()


def test_env_and_a_secret_reach_the_script_and_the_secret_is_written_nowhere(token, runctl_cli, tmp_path):
    (tmp_path / "show.py").write_text(SHOW)
    done = runctl_cli("run", "show.py", "--env", "PLAIN=a=b", "--secret", "TOKEN=ssm:/runctl/token",
                      "--output", "json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    job = json.loads((tmp_path / ".runctl" / "store" / "jobs" / out["job_id"] / "job.json").read_text())
    assert job["env"] == {"PLAIN": "a=b"} and job["secrets"] == {"TOKEN": "ssm:/runctl/token"}
    assert printed(done.stderr) == {"greeting": None, "plain": "a=b", "token_sha256": token}
    assert VALUE not in done.stdout + done.stderr
    assert files_holding(tmp_path, VALUE) == []  # the store, the attempt's log, the run folder


def test_a_named_jobs_tables_and_the_options_over_them(token, runctl_cli, tmp_path):
    (tmp_path / "show.py").write_text(SHOW)
    (tmp_path / ".runctl.toml").write_text(
        '[jobs.show]\nscript = "show.py"\n\n[jobs.show.env]\nGREETING = "table"\nPLAIN = "table"\n\n'
        '[jobs.show.secrets]\nTOKEN = "ssm:/runctl/token"\n')
    done = runctl_cli("run", "show")
    assert done.returncode == 0, done.stderr
    assert printed(done.stdout) == {"greeting": "table", "plain": "table", "token_sha256": token}

    # An option wins over the table, whichever table had the name.
    done = runctl_cli("run", "show", "--env", "GREETING=flag", "--env", "TOKEN=plain", "--job-id", "again")
    assert done.returncode == 0, done.stderr
    assert printed(done.stdout) == {"greeting": "flag", "plain": "table",
                                    "token_sha256": hashlib.sha256(b"plain").hexdigest()}
    assert files_holding(tmp_path, VALUE) == []


@pytest.mark.parametrize("args, said", [
    (("--env", "NOEQUALS"), "--env: an item has no '='"),
    (("--env", "1X=y"), "--env 1X=...: '1X' is no variable name"),
    (("--secret", "TOKEN=hunter2"), "--secret TOKEN=...: not a secret reference"),
    (("--env", "T=1", "--secret", "T=ssm:/x"), "T is given by both --env and --secret; keep one"),
])
def test_bad_items_are_one_line_exit_2(runctl_cli, tmp_path, args, said):
    (tmp_path / "show.py").write_text(SHOW)
    done = runctl_cli("run", "show.py", *args)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr and "hunter2" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_secrets_table_is_checked_by_config_validate(runctl_cli, tmp_path):
    (tmp_path / ".runctl.toml").write_text('[jobs.show]\nscript = "show.py"\n\n[jobs.show.secrets]\nTOKEN = "hunter2"\n')
    done = runctl_cli("config", "validate")
    assert done.returncode == 2
    assert "jobs.show.secrets in" in done.stderr and ".runctl.toml:4" in done.stderr
    assert "TOKEN: not a secret reference" in done.stderr and "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr  # what stands where a reference belongs may be the secret itself


def test_a_secret_that_cannot_be_read_fails_the_run_naming_it(moto_reset, runctl_cli, tmp_path):
    (tmp_path / "show.py").write_text(SHOW)
    done = runctl_cli("run", "show.py", "--secret", "TOKEN=ssm:/runctl/missing")
    assert done.returncode == 3, done.stderr
    assert "cannot read secret TOKEN (ssm:/runctl/missing): ParameterNotFound" in done.stderr
    assert "Traceback" not in done.stderr and "token_sha256" not in done.stderr + done.stdout
