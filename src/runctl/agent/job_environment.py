"""The job's environment on an instance, for the resident agent: made ready before the
job's lease is taken (so a replacement restores it while the dying instance still makes its
final snapshot), its output at the head of the attempt's log, and, when it cannot be built,
the job failed once with the failure's last lines (another machine would fail the same way).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runctl.errors import EnvironmentFailed
from runctl.models import Attempt, JobSpec, JobStatus

if TYPE_CHECKING:
    from runctl.environment.prepare import Prepared

log = logging.getLogger(__name__)

#: The environment's log before the attempt's number is known (the lease is not held yet).
LOG_NAME = "environment.log"
FAILURE_LINES = 5  # of the failing step's output, in status.json's message


@dataclass(frozen=True)
class JobEnvironment:
    """The outcome of the environment step: ``prepared`` (a ``Prepared``) or ``failure``."""

    log_path: Path
    prepared: Prepared | None = None
    failure: EnvironmentFailed | None = None
    started: float = 0.0
    ended: float = 0.0

    @property
    def label(self) -> str | None:
        """The attempt's ``environment`` field."""
        if self.prepared is not None:
            return self.prepared.summary
        return f"failed: {self.failure}" if self.failure is not None else None

    def python(self, default: str) -> str:
        return str(self.prepared.python) if self.prepared is not None else default

    def finish_upload(self) -> None:
        """At the job's end, before the machine may power off: let a built environment's
        upload to the store's cache end (bounded; its outcome is logged, never fatal)."""
        if self.prepared is not None and self.prepared.upload is not None:
            self.prepared.upload.finish()

    def spec_here(self, spec: JobSpec, environ: Mapping[str, str]) -> JobSpec:
        """``spec`` with the environment activated for every attempt (VIRTUAL_ENV, PATH)."""
        if self.prepared is None:
            return spec
        activated = self.prepared.activate(environ)
        return dataclasses.replace(spec, env={"VIRTUAL_ENV": activated["VIRTUAL_ENV"], "PATH": activated["PATH"],
                                              **spec.env})


def envs_root(home: Path) -> Path:
    """Where environments are built and restored: the same path on every instance of an AMI
    (``/var/lib/runctl/envs``), since a virtual environment is not relocatable in general."""
    return home / "envs"


def prepare_job_environment(store, spec: JobSpec, *, workdir: Path, home: Path, run_dir: Path,
                            python: str, clock: Callable[[], float] = time.time) -> JobEnvironment | None:
    """Make the job's declared environment ready here; None for a job without one (an
    image is its environment; a job submitted by an older runctl declares none)."""
    if spec.environment is None or spec.image:
        return None
    from runctl.environment.detect import EnvSource
    from runctl.environment.prepare import prepare

    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / LOG_NAME
    log_path.unlink(missing_ok=True)
    started = clock()
    leave_out = [workdir / spec.checkpoint_dir] if spec.checkpoint_dir else []
    with open(log_path, "ab") as log_file:
        try:
            prepared = prepare(store, EnvSource.from_dict(spec.environment), workdir=workdir,
                               envs_root=envs_root(home), setup=spec.setup, log_file=log_file, python=python,
                               leave_out=leave_out)
        except EnvironmentFailed as exc:
            log_file.write(f"runctl: the job's environment could not be built: {exc}\n".encode())
            log.error("job %s: the environment could not be built: %s", spec.job_id, exc)
            return JobEnvironment(log_path, failure=exc, started=started, ended=clock())
    return JobEnvironment(log_path, prepared=prepared, started=started, ended=clock())


def hand_log_to_attempt(environment: JobEnvironment, run_dir: Path, attempt: int) -> Path:
    """Put the environment's log at the head of attempt ``attempt``'s log (the agent appends
    the script's output to it and ships it to the store)."""
    attempt_log = run_dir / f"attempt-{attempt}.log"
    with open(environment.log_path, "rb") as source, open(attempt_log, "ab") as target:
        shutil.copyfileobj(source, target)
    os.unlink(environment.log_path)
    return attempt_log


def record_failure(store, spec: JobSpec, environment: JobEnvironment, run_dir: Path, labels: Mapping[str, str],
                   clock: Callable[[], float] = time.time) -> str:
    """The job failed: its environment could not be built. One failed attempt (no script
    started), its log shipped, status.json final with the failure's last lines. The caller
    holds the job's lease. Returns the job's state."""
    from runctl.agent.logs import LogShipper
    from runctl.agent.status import StatusBook, close_lost, read_status

    failure = environment.failure
    assert failure is not None
    previous = read_status(store, spec.job_id)
    attempts = close_lost(previous) if previous is not None else ()
    number = len(attempts)
    LogShipper(store, spec.job_id, number, hand_log_to_attempt(environment, run_dir, number)).ship()
    last = " | ".join(failure.tail[-FAILURE_LINES:])
    message = f"the job's environment could not be built: {failure}" + (f"; its last lines: {last}" if last else "")
    book = StatusBook(store, JobStatus(spec.job_id, "running", attempts, command=spec.command), clock)
    book.add_attempt(Attempt(number, environment.started, ended=environment.ended,
                             exit_code=failure.step_exit_code, reason="failed", environment=environment.label,
                             **labels))
    book.update(state="failed", message=message)
    return "failed"
