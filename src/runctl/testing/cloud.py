"""A fake cloud on one machine: the whole AWS path of runctl without an AWS account.

moto in server mode plays EC2, S3, STS, SSM and ECR over HTTP. For every emulated instance
that is running, the harness starts the agent command from the instance's user-data as a
local process, with an EC2 metadata emulator of its own (``runctl.testing.imds``), the AWS
endpoint pointed at moto, and an interpreter that has runctl and its dependencies only
(``runctl.testing.agent_env``): as on EC2, a job finds none of the user's packages there. Terminating (or stopping) the instance in moto kills that
process at once, as losing the machine would. ``interrupt()`` serves a spot interruption
notice to the instance running the job, then terminates it at the notice's deadline
(compressed to a few seconds).

From Python or pytest::

    with FakeCloud(tmp_path) as cloud:
        subprocess.run(["runctl", "aws", "create", ...], env={**os.environ, **cloud.env})

Many harnesses may take turns on one moto server (a test session's): ``FakeCloud(tmp_path,
endpoint=URL, agent_python=PY, image_id=AMI)`` resets that server's state at start instead of
starting one, leaves it running at stop, gives its instances an interpreter made once
(``runctl.testing.agent_env.runctl_only_env``) and names the image found once (moto's
images are the same after every reset; listing them is one of its slowest calls). The server must be in this process
(``ThreadedMotoServer``) or be one nobody else uses meanwhile: resetting it clears everything.

From a shell (exits with COMMAND's exit code)::

    python -m runctl.testing.cloud --interrupt-after 30s,70s -- sh -c 'runctl aws run training/train.py'
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runctl.testing.imds import ImdsEmulator

log = logging.getLogger(__name__)

REGION = "us-east-1"
BUCKET = "runctl-fake-cloud"
#: moto plays no AWS Price List: pointing it at a closed port makes runctl fall back to its
#: built-in price table at once (moto would print a line about an unknown host instead).
NO_PRICE_LIST = "http://127.0.0.1:9"
#: States in which an instance's machine exists and runs its agent.
ALIVE = ("pending", "running")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_image(ec2) -> str:
    """The image the fake cloud's instances boot (moto's first)."""
    return ec2.describe_images()["Images"][0]["ImageId"]


def default_agent_command(user_data: str) -> list[str]:
    """The agent command of a runctl bootstrap script (see runctl.backends.aws.bootstrap)."""
    from runctl.backends.aws.bootstrap import agent_command_from_user_data

    return agent_command_from_user_data(user_data)


@dataclass
class FakeInstance:
    instance_id: str
    imds: ImdsEmulator
    process: subprocess.Popen | None
    home: Path
    store_url: str | None
    log_path: Path
    killed: bool = False
    notices: list[float] = field(default_factory=list)  # the deadlines served to it
    watchdog: threading.Timer | None = None  # the bootstrap's boot watchdog, when armed


class FakeCloud:
    """moto + one IMDS emulator and one agent process per running emulated instance."""

    def __init__(self, workdir: Path, *, region: str = REGION, bucket: str = BUCKET,
                 notice_deadline_s: float = 5.0, poll_interval: float = 0.2,
                 agent_command: Callable[[str], list[str]] = default_agent_command,
                 boot_timeout_s: float | None = None, endpoint: str | None = None,
                 agent_python: str | None = None, image_id: str | None = None,
                 image_packages: tuple[str, ...] = ()) -> None:
        if agent_python and image_packages:
            raise ValueError("agent_python is the instance image's interpreter: give it or image_packages, not both")
        self.workdir = Path(workdir)
        self.region = region
        self.bucket = bucket
        self.notice_deadline_s = notice_deadline_s
        self.poll_interval = poll_interval
        self._agent_command = agent_command
        self.boot_timeout_s = boot_timeout_s  # compresses the user data's boot watchdog timeout
        self.image_packages = image_packages  # installed on its machine image besides runctl (e.g. torch)
        #: Added to every agent's environment from the next boot on: e.g. uv's index settings
        #: (runctl.testing.wheels.offline_index) so jobs' environments build without the network.
        self.agent_environ: dict[str, str] = {}
        self.instances: dict[str, FakeInstance] = {}
        self._booted = 0  # machines booted so far: the next one's private address is 127.0.0.(2 + this)
        self.interruptions: list[dict] = []  # what interrupt() did, for reports and tests
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = None
        self._watcher: threading.Thread | None = None
        self._timers: list[threading.Timer] = []
        self.endpoint = endpoint or ""  # given: a running moto server to share, not one of our own
        self.image_id = image_id or ""
        self.agent_python = agent_python or ""

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> FakeCloud:
        from moto.server import ThreadedMotoServer

        from runctl.testing.agent_env import runctl_only_env

        # An instance has runctl and nothing of the user's project, as on EC2.
        self.agent_python = self.agent_python or str(runctl_only_env(self.workdir / "agent-env", self.image_packages))
        self._machine_bin = self._write_machine_commands()

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        # AWS's managed policies (AmazonSSMManagedInstanceCore, which an older `aws setup`
        # attached) exist in every account; moto, in this process, loads them only when asked.
        os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
        if not self.endpoint:
            port = _free_port()
            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            self._server.start()
            self.endpoint = f"http://127.0.0.1:{port}"
        # moto keeps its state per process (and a shared server, the last harness's): start
        # from an empty cloud.
        urllib.request.urlopen(urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")).close()
        self.client("s3").create_bucket(Bucket=self.bucket)
        # moto's AMIs are not the public ones runctl looks up by SSM parameter: name one.
        self.image_id = self.image_id or first_image(self.client("ec2"))
        self._watcher = threading.Thread(target=self._watch, name="fake-cloud-watcher", daemon=True)
        self._watcher.start()
        return self

    def _write_machine_commands(self) -> Path:
        """The commands an instance's OS has that the fake cloud plays: ``shutdown``."""
        folder = self.workdir / "machine-bin"
        folder.mkdir(parents=True, exist_ok=True)
        shutdown = folder / "shutdown"
        shutdown.write_text(f"#!{self.agent_python}\nimport sys\nfrom runctl.testing.machine_shutdown import main\n"
                            "sys.exit(main())\n")
        shutdown.chmod(0o755)
        return folder

    def stop(self) -> None:
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        with self._lock:
            for instance in self.instances.values():
                self._kill(instance)
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> FakeCloud:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """What a command needs in its environment to use the fake cloud."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_PRICING": NO_PRICE_LIST,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_MAX_ATTEMPTS": "3",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",  # this machine is no instance
            "RUNCTL_AWS_REGION": self.region,
            "RUNCTL_AWS_S3_BUCKET": self.bucket,
            "RUNCTL_AWS_AMI": self.image_id,
        }

    def session(self):
        import boto3

        return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=self.region)

    def client(self, service: str):
        from botocore.config import Config

        return self.session().client(service, endpoint_url=self.endpoint,
                                     config=Config(retries={"max_attempts": 2, "mode": "standard"}))

    # -- the machines ------------------------------------------------------------------
    def _watch(self) -> None:
        ec2 = self.client("ec2")
        while not self._stop.wait(self.poll_interval):
            try:
                states = {i["InstanceId"]: i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
            except Exception as exc:  # moto busy or stopping: look again
                log.debug("describe_instances failed: %s", exc)
                continue
            for instance_id, described in states.items():
                alive = described["State"]["Name"] in ALIVE
                with self._lock:
                    known = self.instances.get(instance_id)
                    if alive and known is None:
                        self.instances[instance_id] = self._boot(ec2, described)
                    elif not alive and known is not None and not known.killed:
                        log.info("%s is %s: its machine is gone", instance_id, described["State"]["Name"])
                        self._kill(known)

    def _is_spot(self, described: dict) -> bool:
        """Spot: a spot launch, or an instance of a group whose policy asks for spot (moto
        launches the group's instances as on-demand ones)."""
        if described.get("InstanceLifecycle") == "spot":
            return True
        tags = {t["Key"]: t.get("Value", "") for t in described.get("Tags", ())}
        name = tags.get("aws:autoscaling:groupName")
        if not name:
            return False
        groups = self.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        for group in groups["AutoScalingGroups"]:
            distribution = group.get("MixedInstancesPolicy", {}).get("InstancesDistribution", {})
            return int(distribution.get("OnDemandPercentageAboveBaseCapacity", 100)) == 0
        return False

    def _boot(self, ec2, described: dict) -> FakeInstance:
        from runctl.testing.machine_shutdown import BEHAVIOUR_ENV, INSTANCE_ENV, shutdown_behaviour

        instance_id = described["InstanceId"]
        home = self.workdir / "instances" / instance_id
        home.mkdir(parents=True, exist_ok=True)
        spot = self._is_spot(described)
        imds = ImdsEmulator(
            instance_id=instance_id, instance_type=described.get("InstanceType", "t3.micro"), region=self.region,
            availability_zone=described.get("Placement", {}).get("AvailabilityZone"),
            lifecycle="spot" if spot else "on-demand", private_ip=self._next_address(),
        )
        imds.start()
        user_data = self._user_data(ec2, instance_id)
        log_path = home / "agent.log"
        process, store_url, watchdog = None, None, None
        env = {**os.environ, **self.env, "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint,
               "RUNCTL_HOME": str(home), INSTANCE_ENV: instance_id, BEHAVIOUR_ENV: shutdown_behaviour(ec2, described),
               "PATH": os.pathsep.join([str(self._machine_bin), os.environ.get("PATH", "")]), **self.agent_environ}
        env.pop("AWS_EC2_METADATA_DISABLED")
        try:
            argv = self._agent_command(user_data)
        except Exception as exc:  # not a runctl instance: a machine that runs nothing of ours
            log.info("%s: no runctl agent in its user-data (%s)", instance_id, exc)
            argv = []
        if argv:
            argv = [self.agent_python, *argv[1:]]  # the instance's interpreter: runctl and its dependencies
            if spot:
                # Firmware checks cannot tell this machine is "on EC2": say so to the agent.
                argv.append("--spot-notices")
            store_url = _option(argv, "--store")
            with open(log_path, "ab") as out:
                process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                           start_new_session=True, cwd=home)
            log.info("%s booted: agent pid %d", instance_id, process.pid)
            watchdog = self._arm_watchdog(instance_id, user_data, env, log_path)
        return FakeInstance(instance_id, imds, process, home, store_url, log_path, watchdog=watchdog)

    def _next_address(self) -> str:
        """A loopback address of the machine's own (127.0.0.2, .3 ...), so that the agents of a
        job of several machines tell each other apart, and reach each other, as on a VPC."""
        self._booted += 1
        if self._booted > 250:
            raise RuntimeError("the fake cloud gives out 250 private addresses at most")
        return f"127.0.0.{1 + self._booted}"

    def _arm_watchdog(self, instance_id: str, user_data: str, env: dict, log_path: Path) -> threading.Timer | None:
        """The bootstrap's boot watchdog (a systemd timer on EC2), after its timeout or ours."""
        from runctl.backends.aws.bootstrap import watchdog_from_user_data
        from runctl.errors import UsageError

        try:
            argv, timeout = watchdog_from_user_data(user_data, python=self.agent_python)
        except UsageError:  # not a runctl bootstrap: nothing armed
            return None
        if not argv:
            return None

        def fire() -> None:
            instance = self.instances.get(instance_id)
            if self._stop.is_set() or instance is None or instance.killed:
                return
            with open(log_path, "ab") as out:
                subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=log_path.parent)

        timer = threading.Timer(self.boot_timeout_s if self.boot_timeout_s is not None else timeout, fire)
        timer.daemon = True
        timer.start()
        return timer

    def _user_data(self, ec2, instance_id: str) -> str:
        attribute = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        encoded = attribute.get("UserData", {}).get("Value", "")
        return base64.b64decode(encoded).decode(errors="replace") if encoded else ""

    def _kill(self, instance: FakeInstance) -> None:
        """The machine vanishes: every process on it dies at once, no goodbye."""
        instance.killed = True
        if instance.watchdog is not None:
            instance.watchdog.cancel()
        if instance.process is not None and instance.process.poll() is None:
            try:
                os.killpg(instance.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            instance.process.wait()
        _kill_descendants_of_home(instance.home)
        instance.imds.stop()

    # -- interruptions ---------------------------------------------------------------
    def job_instance(self) -> str | None:
        """The instance whose agent is running a job now (per its heartbeat in the store)."""
        with self._lock:
            candidates = [i for i in self.instances.values() if not i.killed and i.process is not None]
        for instance in candidates:
            state = self._agent_state(instance)
            if state.get("state") == "running":
                return instance.instance_id
        return candidates[0].instance_id if len(candidates) == 1 else None

    def _agent_state(self, instance: FakeInstance) -> dict:
        if not instance.store_url:
            return {}
        from runctl.errors import NotFoundError
        from runctl.store import layout, open_store

        try:
            store = open_store(instance.store_url, session=self.session(), endpoint_url=self.endpoint)
            return json.loads(store.read(layout.instance_agent_key(instance.instance_id)).data)
        except (NotFoundError, ValueError):
            return {}

    def interrupt(self, instance_id: str | None = None, *, action: str = "terminate") -> dict:
        """Serve a spot notice to ``instance_id`` (default: the one running the job) and
        terminate it in moto at the notice's deadline."""
        instance_id = instance_id or self.job_instance()
        if instance_id is None:
            record = {"at": time.time(), "instance_id": None, "detail": "no instance runs a job"}
            self.interruptions.append(record)
            return record
        instance = self.instances[instance_id]
        notice = instance.imds.schedule_notice(0.0, action=action, deadline_in=self.notice_deadline_s)
        instance.notices.append(notice.deadline_epoch)
        timer = threading.Timer(max(0.0, notice.deadline_epoch - time.time()), self._reclaim, args=(instance_id,))
        timer.daemon = True
        timer.start()
        self._timers.append(timer)
        record = {"at": notice.visible_at, "instance_id": instance_id, "deadline": notice.deadline_epoch}
        self.interruptions.append(record)
        return record

    def lose(self, instance_id: str) -> None:
        """The instance is gone without a notice (a crash, a hard stop)."""
        self._reclaim(instance_id)

    def _reclaim(self, instance_id: str) -> None:
        """AWS takes the instance back; its one-time spot request closes with it (moto's
        nearest state: cancelled), as it does on EC2."""
        from runctl.testing.machine_shutdown import terminate

        try:
            terminate(self.client("ec2"), instance_id)
        except Exception as exc:
            log.warning("could not terminate %s at its deadline: %s", instance_id, exc)

    def leftovers(self) -> list[str]:
        """Instances, fleets and spot requests still alive: a test ends with none."""
        ec2 = self.client("ec2")
        found = [f"instance {i['InstanceId']} ({i['State']['Name']})"
                 for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                 if i["State"]["Name"] in (*ALIVE, "stopping", "stopped")]
        found += [f"fleet {f['FleetId']}" for f in ec2.describe_fleets().get("Fleets", [])
                  if f.get("FleetState") in ("submitted", "active", "modifying")
                  and f.get("Type") != "instant"]
        found += [f"spot request {r['SpotInstanceRequestId']}"
                  for r in ec2.describe_spot_instance_requests().get("SpotInstanceRequests", [])
                  if r.get("State") in ("open", "active")]
        found += [f"launch template {t['LaunchTemplateName']}"
                  for t in ec2.describe_launch_templates().get("LaunchTemplates", [])]
        found += [f"auto scaling group {g['AutoScalingGroupName']}"
                  for g in self.client("autoscaling").describe_auto_scaling_groups().get("AutoScalingGroups", [])]
        return found


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _kill_descendants_of_home(home: Path) -> None:
    """Training processes started by the instance's agent run in their own process group;
    find them by their working folder under the instance's home and kill them too."""
    import psutil

    for proc in psutil.process_iter(["cwd", "pid"]):
        try:
            cwd = proc.info.get("cwd") or ""
            if cwd.startswith(str(home) + os.sep) or cwd == str(home):
                proc.kill()
        except psutil.Error:
            continue


def main(argv: list[str] | None = None) -> int:
    from runctl.interruptions.rehearsal import parse_duration, parse_rehearse_at

    parser = argparse.ArgumentParser(prog="python -m runctl.testing.cloud", description=__doc__.split("\n")[0])
    parser.add_argument("--interrupt-after", default="", metavar="TIMES",
                        help="serve a spot notice to the job's instance at these times, e.g. 30s,70s")
    parser.add_argument("--notice-deadline", default="5s", help="seconds from notice to termination (default 5s)")
    parser.add_argument("--workdir", type=Path, help="where instances keep their files (default: a temp folder)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    try:
        import moto.server  # noqa: F401
    except ModuleNotFoundError:
        print("fake-cloud: needs moto's server: pip install 'runctl[fake-cloud]'", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="runctl-fake-cloud-"))
    _log_to_terminal_and_file(workdir / "emulator.log")
    with FakeCloud(workdir, notice_deadline_s=parse_duration(args.notice_deadline)) as cloud:
        print(f"fake-cloud: AWS endpoint {cloud.endpoint}, bucket {cloud.bucket}, files in {workdir}",
              file=sys.stderr, flush=True)
        started = time.time()
        # The command finds the runctl installed beside this interpreter first.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        proc = subprocess.Popen(command, env={**os.environ, **cloud.env, "PATH": path,
                                              **_config_of_the_fake_cloud(workdir)})
        for at in parse_rehearse_at(args.interrupt_after) if args.interrupt_after else []:
            timer = threading.Timer(max(0.0, started + at - time.time()), lambda: _report(cloud.interrupt()))
            timer.daemon = True
            timer.start()
            cloud._timers.append(timer)
        # SIGTERM (a CI timeout, `timeout`, kill) is passed on to the command, Ctrl-C reaches it
        # from the terminal; either way the with-block then stops every instance's agent.
        signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            code = proc.wait()
        except _Terminated:
            code = _stop(proc, first=proc.terminate)
        except KeyboardInterrupt:
            code = _stop(proc, first=lambda: proc.send_signal(signal.SIGINT))
        left = cloud.leftovers()
        if left:
            print("fake-cloud: left running: " + ", ".join(left), file=sys.stderr)
    return code


def _config_of_the_fake_cloud(workdir: Path) -> dict[str, str]:
    """RUNCTL_CONFIG for the command: a copy of the project's configuration (or an empty
    one), so that what ``runctl aws setup`` records there (the fake bucket, the fake role)
    never reaches the user's own .runctl.toml. Nothing when the user chose a file."""
    from runctl.config import CONFIG_FILENAME, ENV_CONFIG, find_config_file

    if os.environ.get(ENV_CONFIG):
        return {}
    copy = workdir / "config" / CONFIG_FILENAME
    copy.parent.mkdir(parents=True, exist_ok=True)
    found = find_config_file()
    copy.write_bytes(found.read_bytes() if found is not None and found.name == CONFIG_FILENAME else b"")
    return {ENV_CONFIG: str(copy)}


def _log_to_terminal_and_file(path: Path) -> None:
    """The fake cloud's own lines go to the terminal; the emulator's (moto, flask, werkzeug:
    a traceback for every call moto does not implement) go to ``path``, so that a command
    run in the fake cloud shows only what it would show against AWS."""
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(logging.Formatter("fake-cloud: %(message)s"))
    terminal.addFilter(logging.Filter("runctl"))
    path.parent.mkdir(parents=True, exist_ok=True)
    emulator = logging.FileHandler(path)
    emulator.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    emulator.addFilter(lambda record: not record.name.startswith("runctl"))
    logging.basicConfig(level=logging.INFO, handlers=[terminal, emulator])


class _Terminated(Exception):
    """The fake cloud got SIGTERM."""


def _raise_terminated(_signum, _frame) -> None:
    raise _Terminated


def _stop(proc: subprocess.Popen, first: Callable[[], None], patience: float = 10.0) -> int:
    """Stop the command with ``first``; one that does not end (a shell waiting for its
    child) is terminated, then killed."""
    for stop in (first, proc.terminate, proc.kill):
        stop()
        try:
            return proc.wait(timeout=patience)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def _report(record: dict) -> None:
    if record.get("instance_id"):
        print(f"fake-cloud: spot notice to {record['instance_id']}, terminating it in "
              f"{record['deadline'] - time.time():.1f}s", file=sys.stderr, flush=True)
    else:
        print("fake-cloud: no instance runs a job; no notice served", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
