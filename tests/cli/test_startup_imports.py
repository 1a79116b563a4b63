"""The CLI starts fast: ``--help`` of every command, nested groups included, each in a
fresh interpreter, loads none of the heavy libraries (DESIGN.md, rules of the house)."""

from __future__ import annotations

import json
import sys

import pytest

from runctl.cli import COMMANDS

HEAVY = ("boto3", "botocore", "rich", "pydantic", "docker", "moto", "tomlkit")

# Runs --help for the command path in argv[2:], then reports which heavy modules were
# loaded by then and, for a group, its subcommands (listed only after the measurement).
PROBE = r"""
import json, sys
path, report = sys.argv[2:], sys.argv[1]
import runctl.cli
code = None
try:
    runctl.cli.main([*path, "--help"])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in %r if m in sys.modules)
import click
command, ctx = runctl.cli.cli, click.Context(runctl.cli.cli)
for name in path:
    command = command.get_command(ctx, name)
    ctx = click.Context(command, parent=ctx, info_name=name)
subs = command.list_commands(ctx) if isinstance(command, click.Group) else []
with open(report, "w") as f:
    json.dump({"code": code, "heavy": heavy, "subs": subs}, f)
""" % (HEAVY,)


def probe(path: list[str], tmp_path, cli_env) -> tuple[dict, str]:
    import subprocess

    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-c", PROBE, str(report), *path], capture_output=True, text=True,
                          env=cli_env, cwd=tmp_path, timeout=60)
    assert report.exists(), f"probe of {path} failed:\n{done.stderr}"
    return json.loads(report.read_text()), done.stdout


def walk(root: list[str], tmp_path, cli_env) -> list[str]:
    """--help of ``root`` and of every command below it; returns the paths checked."""
    checked, todo = [], [root]
    while todo:
        path = todo.pop(0)
        result, help_text = probe(path, tmp_path, cli_env)
        shown = " ".join(["runctl", *path])
        assert result["code"] in (0, None), f"{shown} --help exited {result['code']}"
        assert "Usage:" in help_text, f"{shown} --help printed no usage"
        assert result["heavy"] == [], f"{shown} --help imported {result['heavy']}"
        checked.append(shown)
        todo.extend([*path, sub] for sub in result["subs"])
    return checked


def test_root_help(tmp_path, cli_env):
    result, help_text = probe([], tmp_path, cli_env)
    assert result["code"] in (0, None) and result["heavy"] == []
    assert sorted(result["subs"]) == sorted(COMMANDS)
    for name in COMMANDS:
        assert name in help_text


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_command_imports_nothing_heavy(command, tmp_path, cli_env):
    checked = walk([command], tmp_path, cli_env)
    assert checked[0] == f"runctl {command}"
