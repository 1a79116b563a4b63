"""What the real-AWS tests drive runctl and AWS with (the fixtures are in conftest.py).

- ``Runctl``: ``python -m runctl ARGS`` in one folder with one environment; ``Background``:
  one started in the background, its output in files (never a full pipe).
- ``Aws``: the caller's account in the e2e region (boto3 clients made on demand).
- ``Settings``, ``write_config``: the instance types, steps and network of the run, and the
  project's .runctl.toml made from them.
- ``Project``: a user's project on real AWS and what the tests ask runctl about it.
- ``Cleanup``: everything a test launched, removed when it ends.

Only the standard library is imported at the top: boto3 only inside what calls AWS.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

STORE_PREFIX = "runctl"  # runctl's default prefix in the job bucket (s3://BUCKET/runctl)
LIVE = ("pending", "running", "stopping", "stopped")


def job_id(kind: str) -> str:
    """A job id no earlier run used: e2e-KIND-<8 hex>."""
    return f"e2e-{kind}-{uuid.uuid4().hex[:8]}"


def last_json_line(text: str) -> dict:
    """The last line of ``text`` that is a JSON object (train.py's result line)."""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, f"no JSON result line in the output:\n{text[-3000:]}"
    return json.loads(lines[-1])


def iso_epoch(text: str) -> float:
    """Epoch seconds of an ISO 8601 UTC time as runctl writes it (``...T08:22:00.123Z``)."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- running runctl --------------------------------------------------------------------------
class Background:
    """A runctl process in the background; its output goes to files (never a full pipe)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        stem = f"runctl-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}"
        self.argv = argv
        self.out_path, self.err_path = logs / f"{stem}.out", logs / f"{stem}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, text=True)

    def poll(self) -> int | None:
        return self.proc.poll()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return f"stdout:\n{self.stdout[-chars:]}\nstderr:\n{self.stderr[-chars:]}"

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def interrupt(self, timeout: float = 180.0) -> None:
        """Ctrl-C (runctl then terminates what it launched), SIGKILL after ``timeout``."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


class Runctl:
    """``python -m runctl ARGS`` in one folder, with one environment."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.cwd, self.env, self.logs = cwd, env, logs
        self.started: list[Background] = []

    def __call__(self, *args: Any, check: bool = True, timeout: float = 900,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "runctl", *map(str, args)]
        done = subprocess.run(argv, cwd=self.cwd, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        if check:
            assert done.returncode == 0, (f"runctl {' '.join(map(str, args))} exited {done.returncode}:\n"
                                          f"{done.stderr[-4000:]}")
        return done

    def json(self, *args: Any, timeout: float = 900, env: dict[str, str] | None = None) -> Any:
        """Run with ``--output json`` (before ``--``, which starts the script's arguments)."""
        args = tuple(map(str, args))
        at = args.index("--") if "--" in args else len(args)
        done = self(*args[:at], "--output", "json", *args[at:], timeout=timeout, env=env)
        return json.loads(done.stdout)

    def start(self, *args: Any, env: dict[str, str] | None = None) -> Background:
        proc = Background([sys.executable, "-m", "runctl", *map(str, args)], self.cwd, {**self.env, **(env or {})},
                          self.logs)
        self.started.append(proc)
        return proc


# -- AWS ------------------------------------------------------------------------------------
@dataclass
class Aws:
    """The caller's AWS account in the e2e region."""

    region: str
    session: Any  # boto3.session.Session
    account: str
    partition: str  # aws, aws-cn, aws-us-gov
    caller: str  # the caller's ARN
    _clients: dict = field(default_factory=dict)

    def client(self, name: str):
        if name not in self._clients:
            self._clients[name] = self.session.client(name, region_name=self.region)
        return self._clients[name]


@dataclass(frozen=True)
class Settings:
    instance_types: tuple[str, ...]  # the type first, then its fallbacks
    steps: int
    base_image: str
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()


def words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


def network_config(settings: Settings) -> list[str]:
    """[aws] lines for the subnets and security groups given, if any."""
    lines = []
    if settings.subnet_ids:
        lines.append(f"subnet_ids = {json.dumps(list(settings.subnet_ids))}")
    if settings.security_group_ids:
        lines.append(f"security_group_ids = {json.dumps(list(settings.security_group_ids))}")
    return lines


# -- cleanup --------------------------------------------------------------------------------
class Cleanup:
    """What a test launched, removed at its end (``run``): background runctl processes are
    interrupted (the job's group ends it on AWS), jobs cancelled and their resources
    removed through runctl, then anything still alive terminated with boto3; the jobs'
    folders in the store and the ECR repositories are deleted."""

    def __init__(self, aws: Aws) -> None:
        self.aws = aws
        self.runctl: Runctl | None = None  # the project's runner, when the test has a project
        self.store: tuple[str, str] | None = None  # (bucket, prefix) of the project's store
        self.jobs: list[str] = []
        self.instances: list[str] = []
        self.repositories: list[str] = []

    def job(self, job_id: str) -> str:
        self.jobs.append(job_id)
        return job_id

    def instance(self, instance_id: str) -> str:
        if instance_id not in self.instances:
            self.instances.append(instance_id)
        return instance_id

    def repository(self, name: str) -> str:
        self.repositories.append(name)
        return name

    def run(self) -> list[str]:
        """Remove everything; returns what could not be removed (empty when all went)."""
        problems: list[str] = []

        def step(what: str, action: Callable[[], None]) -> None:
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - keep cleaning, report at the end
                problems.append(f"{what}: {type(exc).__name__}: {exc}")

        if self.runctl is not None:
            for proc in self.runctl.started:
                step(f"stop {' '.join(proc.argv[2:5])}", proc.interrupt)
            for job in self.jobs:
                step(f"runctl aws cancel {job}", lambda job=job: self._runctl("aws", "cancel", job))
                step(f"runctl resources cleanup --job {job} --yes",
                     lambda job=job: self._runctl("resources", "cleanup", "--job", job, "--yes"))
        step("terminate the instances left (boto3)", self._terminate_left)
        if self.runctl is not None:
            for job in self.jobs:
                step(f"runctl resources list --job {job} is empty", lambda job=job: self._nothing_left(job))
        if self.store is not None:
            step("delete the jobs' folders in the store", self._delete_store_folders)
        for name in self.repositories:
            step(f"delete ECR repository {name}", lambda name=name: self._delete_repository(name))
        return problems

    def _runctl(self, *args: str) -> None:
        assert self.runctl is not None
        done = self.runctl(*args, check=False, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-500:]}")

    def _instances(self) -> list[dict]:
        """Every instance of the test: the ones registered and the ones tagged with its jobs."""
        ec2 = self.aws.client("ec2")
        found: dict[str, dict] = {}
        queries = []
        if self.instances:
            queries.append({"InstanceIds": list(self.instances)})
        if self.jobs:
            queries.append({"Filters": [{"Name": "tag:runctl:job", "Values": list(self.jobs)}]})
        for query in queries:
            for page in ec2.get_paginator("describe_instances").paginate(**query):
                for reservation in page.get("Reservations", ()):
                    for instance in reservation.get("Instances", ()):
                        found[instance["InstanceId"]] = instance
        return list(found.values())

    def _terminate_left(self) -> None:
        left = [i for i in self._instances() if i["State"]["Name"] in LIVE]
        ours = [i["InstanceId"] for i in left if any(t["Key"] == "runctl:created" for t in i.get("Tags", ()))]
        strangers = sorted({i["InstanceId"] for i in left} - set(ours))
        if ours:
            self.aws.client("ec2").terminate_instances(InstanceIds=ours)
        if strangers:
            raise RuntimeError(f"live instances without the runctl:created tag, not touched: {strangers}")

    def _nothing_left(self, job: str) -> None:
        assert self.runctl is not None
        deadline = time.monotonic() + 120
        while True:
            listed = json.loads(self.runctl("resources", "list", "--job", job, "--output", "json", timeout=300).stdout)
            if not listed or time.monotonic() > deadline:
                break
            time.sleep(10)
        if listed:
            raise RuntimeError(f"still listed: {[(r['kind'], r['id'], r['state']) for r in listed]}")

    def _delete_store_folders(self) -> None:
        assert self.store is not None
        bucket, prefix = self.store
        s3 = self.aws.client("s3")
        folders = [f"{prefix}/jobs/{job}/" for job in self.jobs]
        folders += [f"{prefix}/instances/{i['InstanceId']}/" for i in self._instances()]
        for folder in folders:
            keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder)
                    for o in page.get("Contents", ())]
            for start in range(0, len(keys), 1000):
                chunk = keys[start:start + 1000]
                s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})

    def _delete_repository(self, name: str) -> None:
        from botocore.exceptions import ClientError

        ecr = self.aws.client("ecr")
        try:
            ids = [{"imageDigest": d["imageDigest"]} for page in
                   ecr.get_paginator("describe_images").paginate(repositoryName=name)
                   for d in page.get("imageDetails", ())]
            for start in range(0, len(ids), 100):
                ecr.batch_delete_image(repositoryName=name, imageIds=ids[start:start + 100])
            ecr.delete_repository(repositoryName=name, force=True)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "RepositoryNotFoundException":
                raise


@dataclass
class Project:
    """A user's project on real AWS: its folder, its runner, its job store."""

    path: Path
    runctl: Runctl
    store: str  # s3://BUCKET/runctl
    bucket: str
    region: str
    settings: Settings

    @property
    def instance_types(self) -> tuple[str, ...]:
        return self.settings.instance_types

    last_error: str = ""  # what the last failed status / checkpoint list said

    def add_config(self, text: str) -> None:
        with open(self.path / ".runctl.toml", "a") as config:
            config.write(text)

    def status(self, job: str) -> dict | None:
        """``runctl status JOB --output json``; None while the job has no status (or on a hiccup)."""
        done = self.runctl("status", job, "--store", self.store, "--output", "json", check=False, timeout=120)
        if done.returncode != 0:
            self.last_error = f"runctl status {job}: exit {done.returncode}: {done.stderr.strip()[-500:]}"
            return None
        return json.loads(done.stdout)

    def snapshots(self, job: str) -> list[dict]:
        """``runctl checkpoint list --output json``: the complete snapshots, oldest first."""
        done = self.runctl("checkpoint", "list", "--store", self.store, "--job", job, "--output", "json",
                           check=False, timeout=120)
        if done.returncode != 0:
            self.last_error = f"runctl checkpoint list --job {job}: exit {done.returncode}: {done.stderr.strip()[-500:]}"
            return []
        return json.loads(done.stdout)

    def progress(self, job: str, attempt: int) -> dict | None:
        """Attempt ``attempt`` (its status record) once it runs and a snapshot it made is durable."""
        status = self.status(job)
        if status is None or status["state"] != "running" or len(status["attempts"]) != attempt + 1:
            return None
        current = status["attempts"][-1]
        if current["ended"] is not None:
            return None
        snaps = self.snapshots(job)
        if not snaps or snaps[-1]["metadata"].get("attempt") != attempt:
            return None
        return current

    def resources(self, job: str) -> list[dict]:
        return self.runctl.json("resources", "list", "--job", job, timeout=300)

    def diagnose(self, instance_id: str) -> str:
        """The tails of the agent's and the bootstrap's logs on the instance (SSM), best effort."""
        script = ("tail -n 40 /var/log/runctl-agent.log 2>&1; echo ---; "
                  "tail -n 30 /var/log/cloud-init-output.log 2>&1")
        seen = f"last runctl error: {self.last_error}\n" if self.last_error else ""
        try:
            done = self.runctl("aws", "exec", instance_id, "--timeout", "120", "--", script, check=False, timeout=240)
        except subprocess.TimeoutExpired:
            return f"{seen}(could not read the logs on {instance_id}: runctl aws exec timed out)"
        return f"{seen}logs on {instance_id} (runctl aws exec, exit {done.returncode}):\n{done.stdout}{done.stderr}"


def write_config(folder: Path, keys: dict, settings: Settings) -> None:
    """The project's .runctl.toml: the setup's [aws] keys, spot t3-class instances, the
    network given, and snapshots every 10 s (the default 60 s would make the tests wait)."""
    types = settings.instance_types
    lines = ["[aws]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in sorted(keys.items())]
    lines += [f"default_instance_type = {json.dumps(types[0])}",
              f"fallback_instance_types = {json.dumps(list(types[1:]))}",
              "use_spot = true", *network_config(settings), "", "[checkpoint]", "sync_interval = 10.0", ""]
    (folder / ".runctl.toml").write_text("\n".join(lines))
