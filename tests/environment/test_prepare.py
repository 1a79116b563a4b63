"""The environment made ready with the real uv, offline: from a folder of wheels made here."""

import subprocess
import sys

import pytest

from runctl.environment.detect import detect
from runctl.environment.prepare import prepare
from runctl.errors import EnvironmentFailed
from runctl.store.local import LocalStore
from runctl.testing.wheels import make_wheel, offline_index


@pytest.fixture
def wheels(tmp_path):
    folder = tmp_path / "wheels"
    make_wheel(folder, "runctl-probe-pkg", "1.0", {"runctl_probe_pkg/__init__.py": "VALUE = 42\n"})
    return folder


@pytest.fixture
def environ(wheels, monkeypatch):
    import os

    return {**os.environ, **offline_index(wheels)}


def _prepare(store, project, envs, environ, log, **kwargs):
    return prepare(store, detect(project, "train.py"), workdir=project, envs_root=envs, log_file=log,
                   environ=environ, **kwargs)


def _imports(prepared) -> str:
    return subprocess.run([str(prepared.python), "-c", "import runctl_probe_pkg as p; print(p.VALUE)"],
                          capture_output=True, text=True).stdout.strip()


def test_built_once_then_restored_then_present(tmp_path, environ):
    store = LocalStore(tmp_path / "store")
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.txt").write_text("runctl-probe-pkg==1.0\n")
    log = tmp_path / "build.log"
    with open(log, "ab") as out:
        built = _prepare(store, project, tmp_path / "m1", environ, out)
    assert built.how == "built" and _imports(built) == "42"
    assert "caching it in the background" in built.summary
    assert built.upload.finish(timeout=60) and built.upload.outcome().startswith("cached (")
    text = log.read_text()
    assert "environment: requirements.txt (uv pip install)" in text and "uv pip install" in text
    # Another machine: restored from the store, uv never called (it could not resolve anything).
    with open(tmp_path / "restore.log", "ab") as out:
        restored = _prepare(store, project, tmp_path / "m2", environ, out, uv="/nonexistent/uv")
    assert restored.how == "restored" and _imports(restored) == "42"
    assert restored.key == built.key
    assert "without resolving" in (tmp_path / "restore.log").read_text()
    with open(tmp_path / "again.log", "ab") as out:
        assert _prepare(store, project, tmp_path / "m2", environ, out, uv="/nonexistent/uv").how == "present"


def test_setup_runs_once_and_its_files_come_back(tmp_path, environ):
    store = LocalStore(tmp_path / "store")
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.txt").write_text("runctl-probe-pkg==1.0\n")
    setup = ("python -c \"import runctl_probe_pkg as p; open('data/made.txt', 'w').write(str(p.VALUE))\"",)
    (project / "data").mkdir()
    with open(tmp_path / "log", "ab") as out:
        built = _prepare(store, project, tmp_path / "m1", environ, out, setup=setup)
    assert built.upload.finish(timeout=60)
    assert (project / "data" / "made.txt").read_text() == "42"
    assert "$ python -c" in (tmp_path / "log").read_text()  # the setup's command in the job's log
    fresh = tmp_path / "fresh-copy"
    fresh.mkdir()
    (fresh / "requirements.txt").write_text("runctl-probe-pkg==1.0\n")
    with open(tmp_path / "log2", "ab") as out:
        restored = _prepare(store, fresh, tmp_path / "m2", environ, out, setup=setup, uv="/nonexistent/uv")
    assert restored.how == "restored" and restored.key == built.key
    assert (fresh / "data" / "made.txt").read_text() == "42"


def test_failing_setup_says_its_last_lines(tmp_path, environ):
    store = LocalStore(tmp_path / "store")
    project = tmp_path / "project"
    project.mkdir()
    with open(tmp_path / "log", "ab") as out, pytest.raises(EnvironmentFailed) as failed:
        _prepare(store, project, tmp_path / "m1", environ, out, setup=("echo preparing; echo broken >&2; exit 3",))
    assert failed.value.step_exit_code == 3
    assert failed.value.tail == ("preparing", "broken")
    assert "setup command 1 failed (exit 3)" in str(failed.value)
    assert list(store.list("envs/")) == []  # nothing cached
    assert "broken" in (tmp_path / "log").read_text()


def test_missing_package_fails_the_build(tmp_path, environ):
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.txt").write_text("runctl-absent-pkg\n")
    with open(tmp_path / "log", "ab") as out, pytest.raises(EnvironmentFailed, match="uv pip install failed"):
        _prepare(LocalStore(tmp_path / "store"), project, tmp_path / "m1", environ, out)


def test_inline_metadata_dependencies(tmp_path, environ):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text('# /// script\n# dependencies = ["runctl-probe-pkg"]\n# ///\n')
    with open(tmp_path / "log", "ab") as out:
        prepared = _prepare(LocalStore(tmp_path / "store"), project, tmp_path / "m1", environ, out)
    assert prepared.how == "built" and _imports(prepared) == "42"


@pytest.mark.parametrize("locked", [False, True])
def test_uv_project(tmp_path, environ, locked):
    project = tmp_path / "project"
    project.mkdir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "proj"\nversion = "0"\nrequires-python = ">={version}"\n'
        'dependencies = ["runctl-probe-pkg"]\n')
    if locked:
        from runctl.environment.build import find_uv

        subprocess.run([find_uv(), "lock"], cwd=project, env=environ, check=True, capture_output=True)
    before = sorted(p.name for p in project.iterdir())
    with open(tmp_path / "log", "ab") as out:
        prepared = _prepare(LocalStore(tmp_path / "store"), project, tmp_path / "m1", environ, out)
    assert prepared.how == "built" and _imports(prepared) == "42"
    assert sorted(p.name for p in project.iterdir()) == before  # no uv.lock written into the project
    assert ("uv sync --frozen" in (tmp_path / "log").read_text()) == locked
