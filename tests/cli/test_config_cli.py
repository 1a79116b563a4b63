"""`runctl init`, `runctl config show` and `runctl config validate`, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from runctl.cli import cli
from runctl.config import Config, load_config
from runctl.errors import ConfigError, UsageError


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository folder as the current folder, with no RUNCTL_* variables and a private
    user config folder, so that neither the real environment nor ~/.config is read."""
    for name in list(os.environ):
        if name.startswith(("RUNCTL_", "TRAINCTL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", "240")  # rich tables wide enough not to wrap paths
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    monkeypatch.chdir(root)
    return root


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


# ---------------------------------------------------------------- runctl init

def test_init_writes_a_template_that_loads(project):
    result = run("init")
    assert result.exit_code == 0, result.output
    path = project / ".runctl.toml"
    assert result.stdout == f"wrote {path}\n"
    assert "[aws]" in path.read_text() and "# region = " in path.read_text()
    assert load_config(cwd=project, environ=dict(os.environ)).source_path == path


def test_init_refuses_to_overwrite_without_force(project):
    path = project / ".runctl.toml"
    path.write_text("[aws]\nregion = 'mine'\n")
    result = run("init")
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    assert str(result.exception) == f"{path} already exists; use --force to overwrite it"
    assert path.read_text() == "[aws]\nregion = 'mine'\n"

    assert run("init", "--force").exit_code == 0
    assert "region = 'mine'" not in path.read_text()


def test_init_path_may_be_a_file_or_a_folder(project):
    assert run("init", "--path", "other.toml").exit_code == 0
    assert (project / "other.toml").is_file()
    (project / "sub").mkdir()
    assert run("init", "--path", "sub").exit_code == 0
    assert (project / "sub" / ".runctl.toml").is_file()


def test_init_into_a_missing_folder_is_a_usage_error(project):
    result = run("init", "--path", "no/such/folder/x.toml")
    assert isinstance(result.exception, UsageError)
    assert str(result.exception).startswith(f"cannot write {project / 'no/such/folder/x.toml'}: ")


@pytest.mark.parametrize("args", [("--output", "json", "init"), ("init", "--output", "json"), ("init", "-o", "json")])
def test_init_reports_json(project, args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"path": str(project / ".runctl.toml")}


# ---------------------------------------------------------------- runctl config show

def test_config_show_json_gives_values_and_origins(project, monkeypatch):
    path = project / ".runctl.toml"
    path.write_text("[aws]\nregion = 'eu-west-1'\nsubnet_ids = ['s-1']\n")
    monkeypatch.setenv("RUNCTL_CHECKPOINT_KEEP_LAST_N", "7")
    result = run("config", "show", "--output", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["source"] == str(path)
    values = data["values"]
    assert values["aws.region"] == {"value": "eu-west-1", "origin": f"{path}:2"}
    assert values["aws.subnet_ids"] == {"value": ["s-1"], "origin": f"{path}:3"}
    assert values["checkpoint.keep_last_n"] == {"value": 7, "origin": "env RUNCTL_CHECKPOINT_KEEP_LAST_N"}
    assert values["aws.spot_max_price"] == {"value": None, "origin": "default"}
    assert set(values) == set(Config().values())


def test_config_show_json_without_a_file(project):
    data = json.loads(run("-o", "json", "config", "show").stdout)
    assert data["source"] is None
    assert {v["origin"] for v in data["values"].values()} == {"default"}


def test_config_show_text_is_a_table(project):
    path = project / ".runctl.toml"
    path.write_text("[local]\nstop_signal = 'SIGINT'\n")
    result = run("config", "show")
    assert result.exit_code == 0, result.output
    assert f"configuration from {path}" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "local.stop_signal" in line)
    assert '"SIGINT"' in row and f"{path}:2" in row
    row = next(line for line in result.stdout.splitlines() if "aws.ami" in line)
    assert "unset" in row and "default" in row


def test_config_show_with_a_bad_file_raises_config_error(project):
    (project / ".runctl.toml").write_text("[aws]\nregoin = 'x'\n")
    result = run("config", "show")
    assert isinstance(result.exception, ConfigError) and result.exception.exit_code == 2
    assert "did you mean 'region'?" in str(result.exception)


def test_global_config_option_is_used(project, tmp_path):
    other = tmp_path / "elsewhere.toml"
    other.write_text("[docker]\ngpus = 'all'\n")
    data = json.loads(run("--config", str(other), "config", "show", "-o", "json").stdout)
    assert data["source"] == str(other)
    assert data["values"]["docker.gpus"] == {"value": "all", "origin": f"{other}:2"}


def test_global_config_option_naming_a_missing_file(project):
    result = run("--config", "missing.toml", "config", "show")
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == f"config file {project / 'missing.toml'} (from --config) does not exist"


# ---------------------------------------------------------------- runctl config validate

def test_config_validate_ok(project):
    path = project / ".runctl.toml"
    path.write_text("[aws]\nregion = 'eu-west-1'\n")
    result = run("config", "validate")
    assert result.exit_code == 0 and result.stdout == f"ok: {path}\n"
    data = json.loads(run("config", "validate", "-o", "json").stdout)
    assert data == {"ok": True, "source": str(path), "error": None}


def test_config_validate_without_a_file(project):
    result = run("config", "validate")
    assert result.exit_code == 0 and result.stdout.startswith("ok: ")


def test_config_validate_reports_the_error_with_exit_code_2(project):
    path = project / ".runctl.toml"
    path.write_text("[aws]\nuse_spot = 'yes'\n")
    result = run("config", "validate")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f'runctl: error: aws.use_spot in {path}:2 must be a boolean, got string "yes"\n'

    result = run("config", "validate", "--output", "json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["ok"] is False
    assert "aws.use_spot" in json.loads(result.stdout)["error"]


def test_config_validate_reports_a_bad_environment_variable(project, monkeypatch):
    monkeypatch.setenv("RUNCTL_AWS_USE_SPOT", "perhaps")
    result = run("config", "validate")
    assert result.exit_code == 2
    assert "RUNCTL_AWS_USE_SPOT" in result.stderr and "must be a boolean" in result.stderr


# ---------------------------------------------------------------- the real program

def _runctl(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    return subprocess.run([sys.executable, "-m", "runctl", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", [("config", "validate"), ("config", "show")])
def test_malformed_config_exits_2_with_one_line_on_stderr(project, command):
    path = project / ".runctl.toml"
    path.write_text("[aws]\nregion = 'us-east-1'\nuse_spot = \n")
    proc = _runctl(project, *command)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"runctl: error: {path}:3: invalid TOML: ")


def test_init_over_an_existing_file_exits_2(project):
    (project / ".runctl.toml").write_text("")
    proc = _runctl(project, "init")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"runctl: error: {project / '.runctl.toml'} already exists; use --force to overwrite it"]
