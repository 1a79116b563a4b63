"""The wheel of the running runctl: reproducible, installable by pip, content-addressed in the store."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import runctl
from runctl.backends.aws.wheel import build_wheel, publish_wheel, requirements


def test_wheel_is_reproducible_and_complete():
    first, second = build_wheel(), build_wheel()
    assert first.data == second.data and first.sha256 == second.sha256
    assert first.filename == f"runctl-{runctl.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(io.BytesIO(first.data)).namelist()
    assert "runctl/__init__.py" in names and "runctl/agent/resident.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    info = f"runctl-{runctl.__version__}.dist-info"
    assert {f"{info}/METADATA", f"{info}/WHEEL", f"{info}/RECORD"} <= set(names)
    metadata = zipfile.ZipFile(io.BytesIO(first.data)).read(f"{info}/METADATA").decode()
    assert "Requires-Dist: boto3" in metadata and "extra ==" not in metadata
    assert all("extra" not in r for r in requirements())


def test_record_lists_every_file_with_its_hash():
    import base64
    import csv
    import hashlib
    import io

    wheel = build_wheel()
    archive = zipfile.ZipFile(io.BytesIO(wheel.data))
    record_name = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
    rows = list(csv.reader(io.StringIO(archive.read(record_name).decode())))
    assert {row[0] for row in rows} == set(archive.namelist())
    for name, digest, size in rows:
        if name == record_name:
            assert digest == size == ""
            continue
        data = archive.read(name)
        expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == f"sha256={expected}" and int(size) == len(data)


def test_publish_uploads_once_under_a_content_key(local_store):
    first = publish_wheel(local_store)
    again = publish_wheel(local_store)
    assert first.uploaded and not again.uploaded
    assert first.key == again.key and first.key.startswith("dist/") and first.key.endswith(first.filename)
    assert local_store.read(first.key).data == build_wheel().data
    assert first.url.startswith("file://")


def test_publish_presigns_on_s3(s3_store):
    published = publish_wheel(s3_store, expires_s=600)
    assert published.url.startswith("http") and "X-Amz-Expires=600" in published.url
    import urllib.request

    with urllib.request.urlopen(published.url, timeout=10) as response:
        assert response.read() == build_wheel().data


def test_pip_installs_the_wheel_in_a_fresh_venv(tmp_path):
    wheel = build_wheel()
    path = tmp_path / wheel.filename
    path.write_bytes(wheel.data)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # pip of this interpreter installs into the venv (--python); it verifies RECORD on install.
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", "--disable-pip-version-check", "--ignore-installed", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    probe = subprocess.run([str(python), "-I", "-c", "import runctl, pathlib; print(runctl.__version__, "
                            "pathlib.Path(runctl.__file__).parent)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    version, where = probe.stdout.split()
    assert version == runctl.__version__ and str(venv) in where
    shown = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "show", "--files", "runctl"],
                           capture_output=True, text=True, check=True).stdout
    assert "runctl/agent/resident.py" in shown
    assert (venv / "bin" / "runctl").exists()  # the console script from entry_points.txt
