"""SSM Run Command: the not-managed path, the call shape, parsing ps.

moto 5.2 has no DescribeInstanceInformation (HTTP 500), so a wrapper answers it; its
send_command runs nothing and every invocation succeeds with empty output."""

from __future__ import annotations

import pytest

from runctl.backends.aws.ssm import PROCESSES_SCRIPT, Ssm, parse_processes, shell_line
from runctl.errors import CloudError


class Managed:
    """An SSM client on moto whose DescribeInstanceInformation lists ``managed`` instances."""

    def __init__(self, client, managed=()) -> None:
        self._client, self.managed, self.asked = client, set(managed), []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def describe_instance_information(self, Filters):  # noqa: N803 - boto3's argument name
        self.asked.append(Filters)
        ids = [i for f in Filters if f["Key"] == "InstanceIds" for i in f["Values"] if i in self.managed]
        return {"InstanceInformationList": [{"InstanceId": i, "PingStatus": "Online"} for i in ids]}


@pytest.fixture
def ssm_client(aws):
    return aws.client("ssm")


def test_an_instance_without_ssm_is_one_clear_error(ssm_client):
    client = Managed(ssm_client)
    with pytest.raises(CloudError) as info:
        Ssm(client).run("i-0123456789abcdef0", "ps aux")
    assert str(info.value).startswith(
        "instance i-0123456789abcdef0 is not managed by SSM (no SSM agent, or no instance profile that lets "
        "the agent in)")
    assert client.asked == [[{"Key": "InstanceIds", "Values": ["i-0123456789abcdef0"]}]]
    assert ssm_client.list_commands()["Commands"] == []  # nothing was sent


def test_run_sends_a_shell_script_and_reads_the_invocation(ssm_client):
    sleeps = []
    result = Ssm(Managed(ssm_client, {"i-0123456789abcdef0"}), sleep=sleeps.append).run(
        "i-0123456789abcdef0", "echo hi | tr a-z A-Z", timeout=60)
    assert (result.status, result.exit_code, result.stdout) == ("Success", 0, "")  # moto runs nothing
    (command,) = ssm_client.list_commands()["Commands"]
    assert command["DocumentName"] == "AWS-RunShellScript"
    assert command["Parameters"] == {"commands": ["echo hi | tr a-z A-Z"]}
    assert command["InstanceIds"] == ["i-0123456789abcdef0"] and command["CommandId"] == result.command_id


def test_shell_line_and_ps_parsing():
    assert shell_line(["ps aux | head"]) == "ps aux | head"
    assert shell_line(["ls", "-la", "my dir"]) == "ls -la 'my dir'"
    out = ("    PID    PPID USER     ELAPSED %CPU %MEM   RSS COMMAND\n"
           "   4242       1 ec2-user    3600 98.5 12.0 1048576 /opt/runctl/venv/bin/python train.py --lr 0.1\n"
           "      1       0 root        7200  0.0  0.1  9000 /usr/lib/systemd/systemd\n"
           "--- gpus\n0, NVIDIA A10G, 97, 20000, 23028\n")
    processes, gpus = parse_processes(out)
    assert processes[0] == {"pid": 4242, "ppid": 1, "user": "ec2-user", "elapsed_s": 3600, "cpu_percent": 98.5,
                            "mem_percent": 12, "rss_kib": 1048576,
                            "command": "/opt/runctl/venv/bin/python train.py --lr 0.1"}
    assert len(processes) == 2
    assert gpus == [{"index": "0", "name": "NVIDIA A10G", "utilization_percent": 97, "memory_used_mib": 20000,
                     "memory_total_mib": 23028}]
    assert parse_processes("") == ([], [])
    assert "ps -eo" in PROCESSES_SCRIPT and "nvidia-smi" in PROCESSES_SCRIPT
