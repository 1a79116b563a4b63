"""Plain frozen records passed between runctl's parts. No I/O, no heavy imports."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class Record:
    """Mixin: ``to_dict`` for JSON output and ``from_dict`` that ignores unknown keys."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class FileEntry(Record):
    """One file of a checkpoint snapshot: its path inside the snapshot, size and hash."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class CheckpointInfo(Record):
    """A complete checkpoint snapshot (its MANIFEST.json exists)."""

    seq: int
    created: str  # ISO 8601, UTC
    files: tuple[FileEntry, ...]
    url: str  # where the snapshot's files are, e.g. s3://bucket/jobs/J/checkpoints/00000003
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "total_bytes": self.total_bytes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointInfo:
        files = tuple(FileEntry.from_dict(f) for f in data.get("files", ()))
        return cls(
            seq=int(data["seq"]),
            created=data.get("created", ""),
            files=files,
            url=data.get("url", ""),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True)
class InterruptionNotice(Record):
    """A reason to stop the running attempt: a spot notice, a signal, a rehearsal."""

    source: str  # "spot", "rebalance", "signal", "rehearsal", "user", "job-stop" (another machine of the job)
    action: str  # "terminate", "stop", "hibernate", "rebalance", "stop-job"
    received: float  # epoch seconds when the agent saw it
    deadline: float | None = None  # epoch seconds when the machine goes; None if unknown
    detail: str = ""
    restartable: bool = True  # False: the user asked to stop, do not restart


@dataclass(frozen=True)
class Attempt(Record):
    """One run of the job's process, from restore to its final snapshot."""

    number: int
    started: float
    ended: float | None = None
    exit_code: int | None = None
    reason: str | None = None  # completed, unsaved (final snapshot failed), failed, interrupted, killed, stopped, lost
    resumed_from: int | None = None  # seq of the snapshot restored, None on a fresh start
    final_snapshot: int | None = None  # seq of the last snapshot committed for this attempt
    interruption: dict | None = None  # the InterruptionNotice, as a dict
    first_step: int | None = None  # first step the script reported (runctl.progress)
    last_step: int | None = None  # last step the script reported
    host: str = ""
    pid: int | None = None
    instance_id: str | None = None  # the EC2 instance it ran on, when it ran on one
    instance_type: str | None = None
    az: str | None = None  # availability zone
    environment: str | None = None  # how the job's environment came to be here: built, restored, present (and how long)


@dataclass(frozen=True)
class JobStatus(Record):
    """The job's status.json: its state, every attempt, and the agent's heartbeat."""

    job_id: str
    state: str  # pending, running, restarting, completed, failed, stopped
    attempts: tuple[Attempt, ...] = ()
    heartbeat: float | None = None
    command: tuple[str, ...] = ()
    notice: dict | None = None  # the latest interruption notice, as a dict
    message: str = ""
    warnings: tuple[str, ...] = ()  # said when the job ended: e.g. it left no checkpoint in the store

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStatus:
        attempts = tuple(Attempt.from_dict(a) for a in data.get("attempts", ()))
        base = {k: v for k, v in data.items() if k not in ("attempts", "command", "warnings")}
        status = super().from_dict(base)
        return dataclasses.replace(status, attempts=attempts, command=tuple(data.get("command", ())),
                                   warnings=tuple(data.get("warnings", ())))


@dataclass(frozen=True)
class JobSpec(Record):
    """What to run and how: everything an agent needs to run (and re-run) the job."""

    job_id: str
    command: tuple[str, ...]  # argv, script arguments included
    store_url: str
    checkpoint_dir: str  # absolute local folder
    workdir: str  # absolute folder the command runs in
    grace_period: float = 90.0
    stop_signal: str = "SIGTERM"
    max_restarts: int = 3  # restarts after interruptions
    max_restarts_on_errors: int = 0  # restarts after the script failed
    resume_args: tuple[str, ...] = ()  # appended on resume, "{checkpoint}" replaced
    sync_interval: float = 0.0  # least seconds between uploads of rewritten checkpoints
    max_upload_share: float = 0.25  # of the time, spent uploading rewritten checkpoints at most
    keep_last_n: int = 5
    env: dict[str, str] = field(default_factory=dict)
    # NAME -> secret reference ("ssm:/path", "secretsmanager:ID"; runctl.job_env): the agent reads
    # the values before each attempt, into the script's environment only; never stored.
    secrets: dict[str, str] = field(default_factory=dict)
    code_tree: str | None = None  # id of the project's code tree in the store (runctl aws train)
    image: str | None = None  # run each attempt in this Docker image (runctl.agent.container)
    docker_args: tuple[str, ...] = ()  # extra `docker run` arguments (e.g. --gpus, --network)
    registry_login: str = ""  # how an agent logs in to pull ``image``: "ecr" (GetAuthorizationToken) or "" (none)
    gpus: str = "auto"  # [docker] gpus: auto (all, where there are GPUs), all, none or a device list
    nproc_per_node: str | None = None  # processes under torchrun ("2", "auto": one per GPU); None: no torchrun
    nodes: int = 1  # machines of the job (aws run --nodes); above 1, torchrun meets the others at a c10d rendezvous
    # The project's declared environment (runctl.environment.detect.EnvSource); None: the agent's interpreter as it is.
    environment: dict | None = None
    setup: tuple[str, ...] = ()  # shell commands run once per environment, when it is built ([jobs.NAME] setup)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        spec = super().from_dict(data)
        return dataclasses.replace(spec, command=tuple(spec.command), resume_args=tuple(spec.resume_args),
                                   docker_args=tuple(spec.docker_args), setup=tuple(spec.setup))


@dataclass(frozen=True)
class InstanceInfo(Record):
    """An EC2 instance as runctl sees it (from DescribeInstances)."""

    instance_id: str
    instance_type: str
    state: str  # pending, running, stopping, stopped, shutting-down, terminated
    lifecycle: str  # "spot" or "on-demand"
    az: str = ""
    launched: str = ""  # ISO 8601, UTC
    public_ip: str | None = None
    private_ip: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    region: str = ""
    image_id: str = ""
    subnet_id: str | None = None

    @property
    def job_id(self) -> str:
        """The job the instance was launched for ('' when none)."""
        return self.tags.get("runctl:job", "")
