"""runctl.agent.container: a job's variables reach its container by name only."""

from __future__ import annotations

from runctl.agent.container import ContainerAttempt
from runctl.models import JobSpec

VALUE = "s3cr3t-in-the-container"


class ImageCli:
    def image_env(self, ref):
        return {}


def test_env_and_secrets_are_passed_by_name_never_on_the_command_line(tmp_path):
    spec = JobSpec("job", ("python", "train.py"), "file:///s", "/c", "/w", image="127.0.0.1:5000/proj:abc",
                   env={"GREETING": "hi"}, secrets={"TOKEN": "ssm:/runctl/token"})
    argv, env = ContainerAttempt(spec, tmp_path, 0, cli=ImageCli()).wrap(
        ["python", "train.py"], {"GREETING": "hi", "TOKEN": VALUE})
    passed = {argv[i + 1] for i, arg in enumerate(argv) if arg == "-e"}
    assert {"GREETING", "TOKEN"} <= passed
    assert not [arg for arg in argv if VALUE in arg]
    assert env["TOKEN"] == VALUE  # the docker client's environment, which docker run -e NAME reads
