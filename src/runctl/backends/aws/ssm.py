"""Running a shell command on an instance through SSM Run Command (no SSH, no open port).

``Ssm(client).run(instance_id, command)`` checks that the instance is managed by SSM
(DescribeInstanceInformation lists it: its SSM agent runs and its instance profile allows
it), sends ``AWS-RunShellScript`` and polls GetCommandInvocation until the command ends.
SSM keeps at most 24,000 characters of stdout (8,000 of stderr) per invocation.
``parse_ps`` reads the ``ps`` listing ``runctl aws processes`` asks for. Pure parts are
plain functions; the clock and sleep are passed in.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runctl.backends.aws.session import translate
from runctl.errors import CloudError, CloudNotFound
from runctl.models import Record

log = logging.getLogger(__name__)

DOCUMENT = "AWS-RunShellScript"
FINAL = {"Success", "Cancelled", "TimedOut", "Failed", "Undeliverable", "Terminated",
         "InvalidPlatform", "AccessDenied", "DeliveryTimedOut", "ExecutionTimedOut"}
PS_COMMAND = "ps -eo pid,ppid,user,etimes,pcpu,pmem,rss,args --sort=-pcpu"
GPU_MARKER = "--- gpus"
GPU_COMMAND = ("command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi "
               "--query-gpu=index,name,utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits "
               "|| true")
PROCESSES_SCRIPT = f"{PS_COMMAND}; echo '{GPU_MARKER}'; {GPU_COMMAND}"


@dataclass(frozen=True)
class CommandResult(Record):
    instance_id: str
    command_id: str
    status: str  # Success, Failed, TimedOut, ...
    exit_code: int | None
    stdout: str
    stderr: str


def shell_line(command: Sequence[str]) -> str:
    """One word is a shell line as written ('ps aux | head'); several are quoted as argv."""
    return command[0] if len(command) == 1 else shlex.join(command)


def not_managed_message(instance_id: str) -> str:
    return (f"instance {instance_id} is not managed by SSM (no SSM agent, or no instance profile that lets "
            "the agent in); runctl aws setup makes such a profile")


class Ssm:
    def __init__(self, client, *, region: str = "", sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.region = region
        self._sleep = sleep
        self._clock = clock

    def is_managed(self, instance_id: str) -> bool:
        with translate(f"ask SSM about {instance_id}", region=self.region,
                       permission="ssm:DescribeInstanceInformation"):
            response = self.client.describe_instance_information(
                Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])
        return any(i.get("InstanceId") == instance_id for i in response.get("InstanceInformationList", ()))

    def require_managed(self, instance_id: str) -> None:
        if not self.is_managed(instance_id):
            raise CloudError(not_managed_message(instance_id))

    def run(self, instance_id: str, script: str, *, timeout: float = 600, poll: float = 1.0,
            check_managed: bool = True) -> CommandResult:
        """Run ``script`` (a shell line) on the instance and wait for its end."""
        if check_managed:
            self.require_managed(instance_id)
        with translate(f"send a command to {instance_id}", instance_id=instance_id, region=self.region,
                       permission="ssm:SendCommand"):
            sent = self.client.send_command(
                InstanceIds=[instance_id], DocumentName=DOCUMENT, Parameters={"commands": [script]},
                TimeoutSeconds=max(30, int(timeout)), Comment="runctl aws exec")
        command_id = sent["Command"]["CommandId"]
        return self.wait(instance_id, command_id, timeout=timeout, poll=poll)

    def wait(self, instance_id: str, command_id: str, *, timeout: float = 600, poll: float = 1.0) -> CommandResult:
        deadline = self._clock() + timeout
        while True:
            invocation = None
            try:
                with translate(f"read the command's output on {instance_id}", instance_id=instance_id,
                               region=self.region, permission="ssm:GetCommandInvocation"):
                    invocation = self.client.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
            except CloudNotFound as exc:  # asked too soon after sending
                if exc.code != "InvocationDoesNotExist":
                    raise
            status = (invocation or {}).get("Status", "Pending")
            if invocation is not None and status in FINAL:
                code = invocation.get("ResponseCode")
                return CommandResult(instance_id, command_id, status, None if code in (None, -1) else int(code),
                                     invocation.get("StandardOutputContent", ""),
                                     invocation.get("StandardErrorContent", ""))
            if self._clock() >= deadline:
                raise CloudError(f"the command on {instance_id} is still {status} after {timeout:g} s "
                                 f"(SSM command {command_id})")
            self._sleep(poll)


def parse_processes(text: str) -> tuple[list[dict], list[dict]]:
    """The processes and GPUs in the output of ``PROCESSES_SCRIPT``."""
    ps_text, _, gpu_text = text.partition(GPU_MARKER)
    processes = []
    for line in ps_text.splitlines()[1:]:
        parts = line.split(None, 7)
        if len(parts) < 8 or not parts[0].isdigit():
            continue
        pid, ppid, user, etimes, pcpu, pmem, rss, args = parts
        processes.append({"pid": int(pid), "ppid": int(ppid), "user": user, "elapsed_s": _num(etimes),
                          "cpu_percent": _num(pcpu), "mem_percent": _num(pmem), "rss_kib": _num(rss),
                          "command": args})
    gpus = []
    for line in gpu_text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            gpus.append({"index": parts[0], "name": parts[1], "utilization_percent": _num(parts[2]),
                         "memory_used_mib": _num(parts[3]), "memory_total_mib": _num(parts[4])})
    return processes, gpus


def _num(text: str) -> float | int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value
