"""The configuration: ``.runctl.toml`` plus ``RUNCTL_*`` environment overrides.

Where the file comes from (the first one found wins):

1. the ``--config PATH`` option (``explicit=``), then the ``RUNCTL_CONFIG`` variable; a path
   given either way must exist;
2. ``.runctl.toml`` in the current folder or a parent, up to the repository root (the first
   folder holding ``.git``, inclusive) or the filesystem root when there is no repository;
3. the user's file, ``$XDG_CONFIG_HOME/runctl/config.toml`` (``~/.config/runctl/...``).

Then ``RUNCTL_<SECTION>_<KEY>`` variables override single keys (``RUNCTL_AWS_REGION``),
parsed to the key's type: booleans 1/0/true/false/yes/no, lists comma-separated. An empty
variable clears an optional key or a list and is ignored otherwise. ``RUNCTL_AUTO_RESUME``
and ``TRAINCTL_AUTO_RESUME`` are aliases of ``RUNCTL_AWS_AUTO_RESUME``.

The sections are frozen dataclasses; their type annotations and field metadata (help text,
bounds, checks) drive validation, the ``runctl init`` template and ``runctl config show``.
Every mistake is a ``ConfigError`` naming the file, line and key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import signal
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runctl.errors import ConfigError
from runctl.job_env import check_references

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CONFIG_FILENAME = ".runctl.toml"
ENV_CONFIG = "RUNCTL_CONFIG"
AUTO_RESUME_ALIASES = ("RUNCTL_AUTO_RESUME", "TRAINCTL_AUTO_RESUME")

# Signal names valid on Linux instances even when the config is checked on another system.
_POSIX_SIGNALS = frozenset(
    "SIGABRT SIGALRM SIGCONT SIGHUP SIGINT SIGKILL SIGQUIT SIGSTOP SIGTERM SIGTSTP SIGUSR1 SIGUSR2".split()
)


def _signal_name(value: str) -> str:
    if value not in _POSIX_SIGNALS | {s.name for s in signal.Signals}:
        raise ValueError("a signal name such as SIGTERM or SIGINT")
    return value


def _gpus(value: str) -> str:
    if value not in ("auto", "all", "none") and not re.fullmatch(r"\d+(,\d+)*|device=\d+(,\d+)*", value):
        raise ValueError("auto, all, none or GPU indexes such as 0,1")
    return value


def _login(value: str) -> str:
    if value not in ("ecr", "none"):
        raise ValueError("ecr or none")
    return value


def _store_url(value: str) -> str:
    scheme = value.split("://", 1)[0] if "://" in value else None
    if scheme not in (None, "file", "s3"):
        raise ValueError("a folder path, file:///path or s3://bucket/prefix")
    return value


def _share(value: float) -> float:
    if not value <= 1:
        raise ValueError("at most 1 (a share of the time)")
    return value


def nproc_text(value: str | int) -> str:
    """A number of processes per machine as a job's spec holds it: "auto" or a positive
    count, as text. ValueError saying what it must be otherwise (``agent.torchrun.parse_nproc``
    names the option)."""
    text = str(value).strip().lower()
    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise ValueError("a number of processes (1, 2, 8 ...) or \"auto\" (one per GPU, else one)")
    return text if text == "auto" else str(int(text))


def _key(default: Any, help: str, *, example: Any = None, ge: float | None = None,
         gt: float | None = None, check: Callable[[Any], Any] | None = None) -> Any:
    """A config key: its default, a one-line help and the constraints on its value."""
    # Defaults are immutable (lists are tuples), so a plain default is safe to share.
    return field(default=default, metadata={"help": help, "example": example, "ge": ge, "gt": gt, "check": check})


@dataclass(frozen=True)
class AwsConfig:
    region: str = _key("us-east-1", "AWS region to launch instances in.")
    default_instance_type: str = _key("t3.medium", "Instance type used when a job names none.")
    fallback_instance_types: tuple[str, ...] = _key(
        (), "Instance types to try, in order, when the first has no capacity.", example=("g5.xlarge", "g4dn.xlarge"))
    use_spot: bool = _key(True, "Launch spot instances (false: on-demand).")
    spot_max_price: float | None = _key(
        None, "Highest spot price in USD per hour; unset caps it at the on-demand price.", example=0.5, gt=0)
    iam_instance_profile: str | None = _key(
        None, "Instance profile the instances run with (S3/ECR access).", example="runctl-instance")
    s3_bucket: str | None = _key(None, "Bucket for job code, wheels and checkpoints.", example="my-training-bucket")
    subnet_ids: tuple[str, ...] = _key((), "Subnets to launch in (several give AZ failover).", example=("subnet-0abc",))
    security_group_ids: tuple[str, ...] = _key((), "Security groups of the instances.", example=("sg-0abc",))
    key_name: str | None = _key(None, "EC2 key pair for SSH access.", example="my-key")
    ami: str | None = _key(None, "AMI id; unset picks a current Deep Learning AMI.", example="ami-0abc")
    auto_resume: bool = _key(False, "Resume a job on its group's next instance when its instance is reclaimed or lost.")
    max_restarts: int = _key(3, "How many lost or reclaimed instances a job survives before it fails.", ge=0)
    max_boot_failures: int = _key(
        3, "How many instances in a row may fail to start the job's agent before the job fails.", ge=1)
    boot_timeout: float = _key(900.0, "Seconds an instance of a job's group has to start its agent.", gt=0)
    idle_timeout: float = _key(
        60.0, "Minutes an `aws create` instance waits without a job before shutting down; 0: never.", ge=0)


@dataclass(frozen=True)
class CheckpointConfig:
    dir: str | None = _key(
        None, "Local folder the script writes checkpoints into; unset: one per job under .runctl/jobs/.",
        example="checkpoints")
    keep_last_n: int = _key(5, "How many complete snapshots the store keeps.", ge=1)
    sync_interval: float = _key(
        0.0, "Least seconds between uploads of a checkpoint rewritten in place (0: as soon as it settles, "
             "within max_upload_share).", example=60.0, ge=0)
    max_upload_share: float = _key(
        0.25, "Largest share of the time spent uploading checkpoints rewritten in place; rewrites that "
              "come faster are uploaded less often.", gt=0, check=_share)
    store: str | None = _key(
        None, "Store URL (a folder, file:///path or s3://bucket/prefix); unset: .runctl/store in the project.",
        example="s3://my-training-bucket/runctl", check=_store_url)


@dataclass(frozen=True)
class DockerConfig:
    enabled: bool | None = _key(None, "Run jobs in Docker; unset: yes when a Dockerfile is found.", example=True)
    dockerfile: str | None = _key(None, "Dockerfile to build; unset: ./Dockerfile.", example="docker/Dockerfile")
    registry: str | None = _key(None, "Registry to push to; unset: the account's ECR.", example="localhost:5000")
    repository: str | None = _key(None, "Repository name; unset: the project folder's name.", example="my-project")
    gpus: str = _key("auto", "GPUs given to the container: auto (all, where there are GPUs), all, none or "
                             "indexes such as 0,1.", check=_gpus)
    build_args: tuple[str, ...] = _key((), "docker build arguments, KEY=VALUE.", example=("BASE_IMAGE=python:3.11-slim",))
    login: str = _key("ecr", "How to log in to the registry: ecr (GetAuthorizationToken) or none.", check=_login)


@dataclass(frozen=True)
class LocalConfig:
    grace_period: float = _key(90.0, "Seconds between the stop signal and SIGKILL.", ge=0)
    stop_signal: str = _key("SIGTERM", "Signal sent to the job's process group to ask it to stop.", check=_signal_name)
    spot_notices: bool = _key(False, "Poll the EC2 metadata service for spot notices (automatic on EC2 spot).")
    rebalance_is_interruption: bool = _key(
        False, "Treat an EC2 rebalance recommendation as an interruption (default: snapshot at once, go on).")
    max_restarts: int = _key(3, "How many times an interrupted local job is restarted.", ge=0)
    max_restarts_on_errors: int = _key(0, "How many times a job that failed (exit code not 0) is restarted.", ge=0)


def _env_table(value: dict[str, str]) -> dict[str, str]:
    bad = next((name for name in value if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)), None)
    if bad is not None:
        raise ValueError(f"a table of environment variables (NAME = \"value\"); {bad!r} is no variable name")
    return value


@dataclass(frozen=True)
class JobConfig:
    """A named job, ``[jobs.NAME]``: what ``runctl run NAME`` and ``runctl aws run NAME`` run.
    Options on the command line override its keys."""

    script: str | None = _key(None, "The script to run, relative to the project.", example="train.py")
    args: tuple[str, ...] = _key((), "Arguments given to the script (those after -- on the command line follow).",
                                 example=("--epochs", "10"))
    checkpoint_dir: str | None = _key(
        None, "Folder the script saves its checkpoints in, watched and restored by runctl.", example="checkpoints")
    resume_args: tuple[str, ...] = _key(
        (), "Arguments added when resuming; {checkpoint} becomes the checkpoint's path.",
        example=("--resume", "{checkpoint}"))
    env: dict[str, str] = field(default_factory=dict, metadata={
        "help": "Environment variables of the script ([jobs.NAME.env] table).", "example": None, "ge": None,
        "gt": None, "check": _env_table})
    secrets: dict[str, str] = field(default_factory=dict, metadata={
        "help": "Secrets of the script's environment, by reference ([jobs.NAME.secrets] table: NAME = "
                "\"ssm:/path\" or \"secretsmanager:ID\"), read where the job runs.", "example": None, "ge": None,
        "gt": None, "check": check_references, "hide_value": True})
    instance_type: str | None = _key(None, "Instance type on AWS.", example="g5.xlarge")
    fallback_instance_types: tuple[str, ...] = _key((), "Instance types to try next on AWS.", example=("g6.xlarge",))
    spot: bool | None = _key(None, "Spot (true) or on-demand (false) on AWS; unset: [aws] use_spot.", example=True)
    max_restarts: int | None = _key(None, "How many times the job is restarted after an interruption.",
                                    example=3, ge=0)
    max_price_per_hour: float | None = _key(None, "Refuse instance types that cost more per hour (USD).",
                                            example=1.5, gt=0)
    setup: tuple[str, ...] = _key(
        (), "Shell commands run once per environment when it is built, in the job's folder, with it activated.",
        example=("python scripts/fetch_data.py",))
    nproc_per_node: str | None = field(default=None, metadata={
        "help": "Processes under torchrun on the machine: a number, or \"auto\" (one per GPU, else one).",
        "example": 2, "ge": None, "gt": None, "check": nproc_text, "numbers_as_text": True})
    nodes: int | None = _key(None, "Machines the job runs on (aws run), each under torchrun; unset: one.",
                             example=2, ge=1)


SECTIONS: dict[str, type] = {
    "aws": AwsConfig, "checkpoint": CheckpointConfig, "docker": DockerConfig, "local": LocalConfig,
}
#: The table of named jobs, [jobs.NAME], each a JobConfig.
JOBS = "jobs"
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Config:
    aws: AwsConfig = field(default_factory=AwsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    jobs: dict[str, JobConfig] = field(default_factory=dict, compare=False, hash=False)
    source_path: Path | None = None
    # "section.key" -> "default" | "<file path>:<line>" | "env RUNCTL_X_Y"
    origins: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def values(self) -> dict[str, Any]:
        """Every key as ``{"section.key": value}``, in declaration order."""
        return {f"{name}.{f.name}": getattr(getattr(self, name), f.name)
                for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)}

    def job_values(self) -> dict[str, Any]:
        """The keys the named jobs set, as ``{"jobs.NAME.key": value}``."""
        return {key: value for name, job in self.jobs.items() for f in dataclasses.fields(JobConfig)
                if (key := f"{JOBS}.{name}.{f.name}") in self.origins and (value := getattr(job, f.name)) is not None}

    def job(self, name: str) -> JobConfig:
        """The job ``[jobs.NAME]``; ConfigError naming the jobs there are otherwise."""
        if name not in self.jobs:
            where = f" in {self.source_path}" if self.source_path else ""
            known = ", ".join(sorted(self.jobs)) or "none"
            raise ConfigError(f"no job '{name}' in [jobs]{where} (jobs there: {known})")
        return self.jobs[name]


# ---------------------------------------------------------------- types

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", tuple: "a list of strings",
               dict: "a table of strings"}


@dataclass(frozen=True)
class _Spec:
    section: str
    name: str
    base: type  # bool, int, float, str or tuple (of str)
    optional: bool
    meta: Mapping[str, Any]
    default: Any

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return f"RUNCTL_{self.section.upper()}_{self.name.upper()}"


def _specs(section: str) -> dict[str, _Spec]:
    cls = JobConfig if section == JOBS else SECTIONS[section]
    hints = typing.get_type_hints(cls)
    specs = {}
    for f in dataclasses.fields(cls):
        args = typing.get_args(hints[f.name])
        optional = type(None) in args
        tp = next(a for a in args if a is not type(None)) if optional else hints[f.name]
        base = typing.get_origin(tp) or tp
        specs[f.name] = _Spec(section, f.name, base, optional, f.metadata, f.default)
    return specs


def toml_value(value: Any) -> str:
    """``value`` written as TOML (``unset`` for None)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _describe(value: Any) -> str:
    kinds = [(bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
             (list, "array"), (dict, "table")]
    kind = next((k for t, k in kinds if isinstance(value, t)), type(value).__name__)
    return "a table" if kind == "table" else f"{kind} {toml_value(value)}"


def _from_toml(spec: _Spec, value: Any) -> Any:
    """``value`` as the key's type, or ``TypeError`` when it is something else."""
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec.base is bool and isinstance(value, bool):
        return value
    if spec.base is int and is_num and isinstance(value, int):
        return value
    if spec.base is float and is_num:
        return float(value)
    if spec.base is str and isinstance(value, str):
        return value
    if spec.base is str and spec.meta.get("numbers_as_text") and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # nproc_per_node = 2 reads as naturally as "auto"
    if spec.base is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if spec.base is dict and isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return dict(value)
    raise TypeError


def _from_env(spec: _Spec, text: str) -> Any:
    """The variable's text as the key's type, or ``ValueError``."""
    text = text.strip()
    if spec.base is bool:
        words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
        if text.lower() not in words:
            raise ValueError(text)
        return words[text.lower()]
    if spec.base is int:
        return int(text)
    if spec.base is float:
        return float(text)
    if spec.base is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return text


def _check(spec: _Spec, value: Any, subject: str) -> Any:
    """Apply the key's bounds and check; ``subject`` says where the value came from."""
    meta = spec.meta
    if spec.base is str and value == "":
        raise ConfigError(f"{subject} must be a non-empty string (to leave it unset, remove the line)")
    if meta.get("ge") is not None and not value >= meta["ge"]:
        raise ConfigError(f"{subject} must be >= {meta['ge']}, got {toml_value(value)}")
    if meta.get("gt") is not None and not value > meta["gt"]:
        raise ConfigError(f"{subject} must be > {meta['gt']}, got {toml_value(value)}")
    if meta.get("check") is not None:
        try:
            value = meta["check"](value)
        except ValueError as exc:
            got = "" if meta.get("hide_value") else f", got {toml_value(value)}"  # it may hold a secret
            raise ConfigError(f"{subject} must be {exc}{got}") from None
    return value


# ---------------------------------------------------------------- finding the file

def find_config_file(explicit: Path | None = None, *, cwd: Path | None = None,
                     environ: Mapping[str, str] | None = None) -> Path | None:
    """The configuration file to read (see the module docstring), or None when there is none."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    for given, how in ((explicit, "--config"), (environ.get(ENV_CONFIG) or None, ENV_CONFIG)):
        if given is not None:
            path = cwd / Path(given).expanduser()
            if not path.is_file():
                what = "is not a file" if path.exists() else "does not exist"
                raise ConfigError(f"config file {path} (from {how}) {what}")
            return path
    for folder in (cwd.absolute(), *cwd.absolute().parents):
        if (folder / CONFIG_FILENAME).is_file():
            return folder / CONFIG_FILENAME
        if (folder / ".git").exists():
            break
    xdg = environ.get("XDG_CONFIG_HOME", "")
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    user = (Path(xdg) if os.path.isabs(xdg) else home / ".config") / "runctl" / "config.toml"
    return user if user.is_file() else None


# ---------------------------------------------------------------- reading the file

_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


def _dotted(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each table header and key (as a path of names) to its first line number."""
    index: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            table = _dotted(header.group(1))
            index.setdefault(table, number)
        elif assign := _ASSIGN.match(line):
            index.setdefault(table + _dotted(assign.group(1)), number)
    return index


def _read(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if where:
            line, message = where.group(1), f"{message[:where.start()]} (column {where.group(2)})"
        else:
            line, message = str(len(text.splitlines()) or 1), re.sub(r"\s*\(at end of document\)$", "", message)
        raise ConfigError(f"{path}:{line}: invalid TOML: {message}") from None
    return data, _line_index(text)


def _suggest(name: str, valid: list[str], fmt: str = "'{}'") -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return "; did you mean " + fmt.format(close[0]) + "?"
    return "; valid: " + ", ".join(fmt.format(v) for v in valid)


def _file_values(path: Path) -> dict[str, tuple[Any, str]]:
    """Validated values from the file: ``{"section.key": (value, "path:line")}``."""
    data, index = _read(path)

    def where(*keys: str) -> str:
        for n in range(len(keys), 0, -1):
            if keys[:n] in index:
                return f"{path}:{index[keys[:n]]}"
        return str(path)

    found: dict[str, tuple[Any, str]] = {}
    for section, table in data.items():
        if section == JOBS:
            found.update(_job_values(table, where))
            continue
        if section not in SECTIONS:
            homes = [s for s in SECTIONS if section in _specs(s)]
            if homes and not isinstance(table, dict):
                raise ConfigError(f"unknown key '{section}' in {where(section)}; "
                                  f"did you mean '{section}' under [{homes[0]}]?")
            raise ConfigError(f"unknown section '{section}' in {where(section)}"
                              + _suggest(section, list(SECTIONS), "[{}]"))
        if not isinstance(table, dict):
            raise ConfigError(f"{section} in {where(section)} must be a table ([{section}]), got {_describe(table)}")
        specs = _specs(section)
        for name, raw in table.items():
            origin = where(section, name)
            if name not in specs:
                raise ConfigError(f"unknown key '{section}.{name}' in {origin}" + _suggest(name, list(specs)))
            spec = specs[name]
            found[spec.path] = (_validated(spec, raw, f"{spec.path} in {origin}"), origin)
    return found


def _validated(spec: _Spec, raw: Any, subject: str) -> Any:
    """A value from the file as the key's type, within its bounds; ``subject`` names it."""
    try:
        value = _from_toml(spec, raw)
    except TypeError:
        raise ConfigError(f"{subject} must be {_TYPE_NAMES[spec.base]}, got {_describe(raw)}") from None
    return _check(spec, value, subject)


def _job_values(jobs: Any, where: Callable[..., str]) -> dict[str, tuple[Any, str]]:
    """Validated values of the [jobs.NAME] tables: ``{"jobs.NAME.key": (value, "path:line")}``."""
    if not isinstance(jobs, dict) or not all(isinstance(job, dict) for job in jobs.values()):
        raise ConfigError(f"jobs in {where(JOBS)} must be tables of jobs ([jobs.NAME]), got {_describe(jobs)}")
    specs = _specs(JOBS)
    found: dict[str, tuple[Any, str]] = {}
    for name, table in jobs.items():
        if not JOB_NAME.fullmatch(name):
            raise ConfigError(f"job name '{name}' in {where(JOBS, name)}: use letters, digits, '.', '_' and '-'")
        for key, raw in table.items():
            origin = where(JOBS, name, key)
            if key not in specs:
                raise ConfigError(f"unknown key '{JOBS}.{name}.{key}' in {origin}" + _suggest(key, list(specs)))
            found[f"{JOBS}.{name}.{key}"] = (_validated(specs[key], raw, f"{JOBS}.{name}.{key} in {origin}"), origin)
    return found


def _env_values(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """Values from ``RUNCTL_<SECTION>_<KEY>`` variables: ``{"section.key": (value, "env NAME")}``."""
    found: dict[str, tuple[Any, str]] = {}
    for section in SECTIONS:
        for spec in _specs(section).values():
            names = [spec.env, *(AUTO_RESUME_ALIASES if spec.path == "aws.auto_resume" else ())]
            var = next((n for n in names if n in environ), None)
            if var is None:
                continue
            text, subject = environ[var], f"{var} ({spec.path})"
            if not text.strip():
                if spec.optional or spec.base is tuple:
                    found[spec.path] = (None if spec.optional else (), f"env {var}")
                continue
            try:
                value = _from_env(spec, text)
            except ValueError:
                hint = " (1/0/true/false/yes/no)" if spec.base is bool else ""
                raise ConfigError(f"{subject} must be {_TYPE_NAMES[spec.base]}{hint}, got {text!r}") from None
            found[spec.path] = (_check(spec, value, subject), f"env {var}")
    return found


def load_config(explicit: Path | None = None, *, cwd: Path | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Find, read and validate the configuration; raise ``ConfigError`` on any mistake."""
    environ = os.environ if environ is None else environ
    source = find_config_file(explicit, cwd=cwd, environ=environ)
    values = _file_values(source) if source is not None else {}
    values.update(_env_values(environ))
    sections: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        kwargs = {}
        for name in _specs(section):
            value, origins[f"{section}.{name}"] = values.get(f"{section}.{name}", (None, "default"))
            if origins[f"{section}.{name}"] != "default":
                kwargs[name] = value
        sections[section] = cls(**kwargs)
    jobs: dict[str, dict[str, Any]] = {}
    for key, (value, origin) in values.items():
        if key.startswith(JOBS + "."):
            # rsplit: a job's name may hold dots ([jobs."train.py"]), a key's never does.
            name, field_name = key[len(JOBS) + 1:].rsplit(".", 1)
            jobs.setdefault(name, {})[field_name] = value
            origins[key] = origin
    return Config(**sections, jobs={name: JobConfig(**keys) for name, keys in jobs.items()},
                  source_path=source, origins=origins)


def render_template() -> str:
    """A ``.runctl.toml`` showing every key, commented out, with its default and its meaning."""
    lines = [
        "# runctl configuration. Every key is optional; the values shown are the defaults.",
        "# Uncomment a line to change it. Any key can also be set from the environment as",
        "# RUNCTL_<SECTION>_<KEY>, e.g. RUNCTL_AWS_REGION=eu-west-1.",
    ]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for spec in _specs(section).values():
            if spec.default is None:
                lines += [f"# {spec.meta['help']}",
                          f"# {spec.name} = {toml_value(spec.meta['example'])}  # an example; default: unset"]
            else:
                lines += [f"# {spec.meta['help']}", f"# {spec.name} = {toml_value(spec.default)}"]
    lines += ["", "# Named jobs: `runctl run NAME` and `runctl aws run NAME` run them; options on the",
              "# command line override their keys. For example:", "#", "#   [jobs.train]"]
    for spec in _specs(JOBS).values():
        if spec.name not in ("env", "secrets"):
            lines.append(f"#   {spec.name} = {toml_value(spec.meta['example'])}  # {spec.meta['help']}")
    lines += ["#", "#   [jobs.train.env]  # the script's environment variables", '#   WANDB_PROJECT = "demo"']
    lines += ["#", "#   [jobs.train.secrets]  # read where the job runs; only the reference is stored",
              '#   WANDB_API_KEY = "ssm:/runctl/wandb-api-key"']
    return "\n".join(lines) + "\n"
