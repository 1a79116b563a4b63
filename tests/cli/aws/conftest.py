"""Fixtures for the EC2-side ``runctl aws`` commands, driven in-process through
``runctl.cli.main`` against moto (server mode): a project folder with a .runctl.toml whose
bucket exists, and ``run_cli`` returning (exit code, stdout, stderr)."""

from __future__ import annotations

import json
import types

import pytest


@pytest.fixture
def ec2_project(tmp_path, monkeypatch, s3_bucket):
    """The current folder is a project whose [aws] s3_bucket exists (in moto)."""
    root = tmp_path / "myproj"
    root.mkdir()
    (root / ".runctl.toml").write_text(f'# my settings\n[aws]\nregion = "us-east-1"\ns3_bucket = "{s3_bucket}"\n')
    monkeypatch.chdir(root)
    return types.SimpleNamespace(root=root, bucket=s3_bucket)


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*args)`` -> (exit code, stdout, stderr) of ``runctl ARGS`` in this process."""
    from runctl.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        return info.value.code, captured.out, captured.err

    return run


@pytest.fixture
def run_json(run_cli):
    def run(*args: str):
        code, out, err = run_cli("--output", "json", *args)
        assert code == 0, err
        return json.loads(out)

    return run


@pytest.fixture
def ec2_client(moto_server):
    import boto3

    return boto3.client("ec2", region_name="us-east-1")
