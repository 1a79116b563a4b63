"""The resident agent's environment step: a job without a declared environment (or with an
image) skips it; a build that fails is recorded as the job's one failed attempt, its log
shipped and its last lines in status.json."""

from __future__ import annotations

import dataclasses

from runctl.agent.job_environment import prepare_job_environment, record_failure
from runctl.agent.logs import log_chunks
from runctl.agent.status import read_status
from runctl.models import JobSpec
from runctl.store.local import LocalStore

SPEC = JobSpec("job", ("python", "train.py"), "", checkpoint_dir="", workdir="",
               environment={"kind": "none"}, setup=("echo getting data; echo no data >&2; exit 5",))


def test_no_environment_declared_or_an_image_skips_it(tmp_path):
    store = LocalStore(tmp_path / "store")
    for spec in (dataclasses.replace(SPEC, environment=None), dataclasses.replace(SPEC, image="img:1")):
        assert prepare_job_environment(store, spec, workdir=tmp_path, home=tmp_path / "home",
                                       run_dir=tmp_path / "run", python="python3") is None


def test_a_failing_setup_is_one_failed_attempt_with_its_last_lines(tmp_path):
    import sys

    store = LocalStore(tmp_path / "store")
    work = tmp_path / "work"
    work.mkdir()
    environment = prepare_job_environment(store, SPEC, workdir=work, home=tmp_path / "home",
                                          run_dir=tmp_path / "run", python=sys.executable)
    assert environment.failure is not None and environment.prepared is None
    assert record_failure(store, SPEC, environment, tmp_path / "run", {"instance_id": "i-1"}) == "failed"
    status = read_status(store, "job")
    assert status.state == "failed"
    assert status.message.endswith("its last lines: getting data | no data")
    attempt, = status.attempts
    assert (attempt.reason, attempt.exit_code, attempt.instance_id) == ("failed", 5, "i-1")
    assert attempt.environment.startswith("failed: setup command 1 failed (exit 5)")
    shipped = b"".join(store.read(key).data for key in log_chunks(store, "job", 0)).decode()
    assert "runctl: $ echo getting data" in shipped and "no data" in shipped
    assert not (tmp_path / "run" / "environment.log").exists()  # handed to the attempt's log


class _UploadWaitsForTheScript:
    """A folder store whose environment-archive upload blocks until the job's script has
    written ``marker``: the script can only get there if it started before the upload ended."""

    def __init__(self, store: LocalStore, marker) -> None:
        self._store = store
        self._marker = marker
        self.script_ran_first: bool | None = None

    def upload(self, path, key, **kwargs):
        if key.startswith("envs/"):
            import time

            deadline = time.monotonic() + 60
            while not self._marker.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.script_ran_first = self._marker.exists()
        return self._store.upload(path, key, **kwargs)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_the_first_instance_starts_its_script_before_its_upload_ends(tmp_path, monkeypatch):
    import sys

    from runctl.agent.assignment import remote_spec, write_job_spec
    from runctl.agent.identity import InstanceIdentity
    from runctl.agent.resident import ResidentAgent
    from runctl.environment import cache
    from runctl.testing.wheels import make_wheel, offline_index

    make_wheel(tmp_path / "wheels", "runctl-probe-pkg", "1.0", {"runctl_probe_pkg/__init__.py": "VALUE = 42\n"})
    for name, value in offline_index(tmp_path / "wheels").items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    work = home / "jobs" / "envjob" / "work"  # a job without a code tree runs here
    work.mkdir(parents=True)
    (work / "requirements.txt").write_text("runctl-probe-pkg==1.0\n")
    marker = work / "script-started"
    store = _UploadWaitsForTheScript(LocalStore(tmp_path / "store"), marker)
    spec = dataclasses.replace(
        remote_spec("envjob", ("python", "-c", f"import runctl_probe_pkg; open({str(marker)!r}, 'w').close()"),
                    store.url, code_tree=None, sync_interval=0.5),
        environment={"kind": "requirements", "files": ["requirements.txt"]})
    write_job_spec(store, spec)
    agent = ResidentAgent(store, InstanceIdentity("i-env"), home, spot_notices=False, python=sys.executable)
    assert agent.run_job("envjob") == "completed"
    assert store.script_ran_first is True
    # run_job waited for the upload: the archive and then its record are in the store.
    (attempt,) = read_status(store, "envjob").attempts
    assert attempt.environment.startswith("built in ") and "caching it in the background" in attempt.environment
    key = next(o.key for o in store.list("envs/") if o.key.endswith(".json")).removeprefix("envs/")
    record = cache.read_record(store, key.removesuffix(".json"))
    assert record["size"] > 0 and len(record["sha256"]) == 64
