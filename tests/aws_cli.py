"""What anyone with the AWS CLI gets from a snapshot folder: ``aws s3 cp --recursive``
must give exactly the checkpoint's files (and the manifest), each as the manifest says."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest


def aws_cli_copy_of_snapshot(s3_store, snapshot_prefix: str, target: Path) -> dict[str, bytes]:
    """Copy the snapshot folder ``snapshot_prefix`` (a store key ending in '/') with the AWS
    CLI into ``target``, assert it holds exactly the manifest's files with their sizes and
    sha256 and the manifest, and return them (relative path -> bytes). Skips the test
    where the AWS CLI is not installed."""
    if shutil.which("aws") is None:
        pytest.skip("the AWS CLI is not installed")
    subprocess.run(["aws", "s3", "cp", "--recursive", "--only-show-errors",
                    f"s3://{s3_store.bucket}/{s3_store.prefix}/{snapshot_prefix}", str(target)],
                   check=True, timeout=120)
    manifest = json.loads((target / "MANIFEST.json").read_bytes())
    got = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert set(got) == {f["path"] for f in manifest["files"]} | {"MANIFEST.json"}
    for f in manifest["files"]:
        assert hashlib.sha256(got[f["path"]]).hexdigest() == f["sha256"] and len(got[f["path"]]) == f["size"]
    return got
