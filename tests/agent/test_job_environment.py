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
