"""The instance side of a job in an image: which registry to log in to, and the pull."""

from __future__ import annotations

import dataclasses

from runctl.agent.container import ContainerAttempt, pull_job_image, registry_host
from runctl.models import JobSpec


def test_registry_host():
    assert registry_host("123456789012.dkr.ecr.us-east-1.amazonaws.com/proj:abc") == \
        "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert registry_host("127.0.0.1:5000/proj:abc") == "127.0.0.1:5000"
    assert registry_host("localhost/proj") == "localhost"
    assert registry_host("python:3.11-slim") is None
    assert registry_host("library/python:3.11") is None


class FakeCli:
    def __init__(self):
        self.calls = []

    def ping(self):  # an engine runs
        pass

    def login(self, registry):
        self.calls.append(("login", registry.host))

    def pull(self, ref):
        self.calls.append(("pull", ref))


def _spec(image, login=""):
    return JobSpec("job", ("python", "train.py"), "file:///s", "/c", "/w", image=image, registry_login=login)


def test_an_image_without_registry_login_is_pulled_without_logging_in():
    cli = FakeCli()
    assert pull_job_image(_spec("127.0.0.1:5000/proj:abc"), cli=cli) == "pulled 127.0.0.1:5000/proj:abc"
    assert cli.calls == [("pull", "127.0.0.1:5000/proj:abc")]


def test_a_docker_hub_image_needs_no_login_even_with_ecr_login():
    cli = FakeCli()
    pull_job_image(_spec("python:3.11-slim", "ecr"), cli=cli)
    assert cli.calls == [("pull", "python:3.11-slim")]


def test_an_old_job_json_without_the_field_reads():
    data = _spec("x/y:z").to_dict()
    data.pop("registry_login")
    assert JobSpec.from_dict(data).registry_login == ""


class ImageCli(FakeCli):
    def image_env(self, ref):
        return {}


def test_the_gpus_setting_reaches_docker_run(tmp_path):
    def command(gpus):
        spec = dataclasses.replace(_spec("127.0.0.1:5000/proj:abc"), gpus=gpus)
        argv, _env = ContainerAttempt(spec, tmp_path, 0, cli=ImageCli()).wrap(["python", "train.py"], {})
        return argv

    assert command("0,1")[command("0,1").index("--gpus") + 1] == '"device=0,1"'
    assert command("all")[command("all").index("--gpus") + 1] == "all"
    assert "--gpus" not in command("none")


def test_synced_code_is_mounted_over_the_images_workspace(tmp_path):
    image = _spec("127.0.0.1:5000/proj:abc")
    synced = dataclasses.replace(image, code_tree="tree-1", workdir="/opt/runctl/code")
    argv, _env = ContainerAttempt(synced, tmp_path, 0, cli=ImageCli()).wrap(["python", "train.py"], {})
    assert "/opt/runctl/code:/workspace" in argv and argv[argv.index("/opt/runctl/code:/workspace") - 1] == "-v"
    argv, _env = ContainerAttempt(image, tmp_path, 0, cli=ImageCli()).wrap(["python", "train.py"], {})
    assert not any(a.endswith(":/workspace") for a in argv)


def test_a_checkpoint_folder_of_the_project_is_also_where_the_images_project_is(tmp_path):
    # The code is the image's (no --sync-code): the script writes checkpoints/ relative to
    # /workspace, and the resume arguments, made relative, lead there too.
    spec = dataclasses.replace(_spec("127.0.0.1:5000/proj:abc"), workdir="/w", checkpoint_dir="/w/out/ckpt")
    argv, _env = ContainerAttempt(spec, tmp_path, 0, cli=ImageCli()).wrap(["python", "train.py"], {})
    assert argv[argv.index("/w/out/ckpt:/workspace/out/ckpt") - 1] == "-v"
    assert "/w/out/ckpt:/w/out/ckpt" in argv  # RUNCTL_CHECKPOINT_DIR, the host's path, as before
    synced = dataclasses.replace(spec, code_tree="tree-1")  # there already, through the project's mount
    argv, _env = ContainerAttempt(synced, tmp_path, 0, cli=ImageCli()).wrap(["python", "train.py"], {})
    assert not any(a.endswith(":/workspace/out/ckpt") for a in argv)
