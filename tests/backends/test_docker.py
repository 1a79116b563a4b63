"""The pure parts of the Docker backend: detection, content tags, names, GPUs, docker run."""

from __future__ import annotations

import pytest

from runctl.backends.docker import (build_failure, container_command, content_tag, context_files, find_dockerfile,
                                    in_container_argv, repository_name, wants_gpus)
from runctl.errors import UsageError


def test_find_dockerfile_order(tmp_path):
    assert find_dockerfile(tmp_path) is None
    for name in ("training/Dockerfile", "docker/Dockerfile", "Dockerfile.train", "Dockerfile"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("FROM scratch\n")
        assert find_dockerfile(tmp_path) == tmp_path / name  # each one found before the earlier ones
    assert find_dockerfile(tmp_path, "docker/Dockerfile") == tmp_path / "docker/Dockerfile"
    with pytest.raises(UsageError, match="Dockerfile not found: nope"):
        find_dockerfile(tmp_path, "nope")


def test_content_tag_follows_content_and_dockerignore(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"x")
    (tmp_path / ".runctl").mkdir()
    (tmp_path / ".runctl" / "state").write_text("changes every run")
    (tmp_path / ".dockerignore").write_text("# comment\ndata\n*.log\n!keep.log\n")
    (tmp_path / "a.log").write_text("x")
    (tmp_path / "keep.log").write_text("x")
    assert context_files(tmp_path) == [".dockerignore", "Dockerfile", "keep.log", "train.py"]
    tag = content_tag(tmp_path, tmp_path / "Dockerfile")
    assert len(tag) == 16 and tag == content_tag(tmp_path, tmp_path / "Dockerfile")
    (tmp_path / "data" / "big.bin").write_bytes(b"y")  # ignored: same tag
    (tmp_path / ".runctl" / "state").write_text("other")
    assert content_tag(tmp_path, tmp_path / "Dockerfile") == tag
    assert content_tag(tmp_path, tmp_path / "Dockerfile", {"BASE_IMAGE": "x"}) != tag
    (tmp_path / "train.py").write_text("print(2)\n")
    assert content_tag(tmp_path, tmp_path / "Dockerfile") != tag


def test_dockerignore_is_read_as_docker_reads_it(tmp_path):
    """Docker anchors every line at the context root, cleans it as a path, and lets a later
    ``!`` line bring a file back from an excluded folder. The reading before pathspec let
    ``*.log`` leave out logs in every folder, so a change to one that is in the image kept
    the old tag."""
    for rel in ("Dockerfile", "a.log", "sub/b.log", "deep/x/c.log", "data/big.csv", "data/keep.csv",
                "build/out", "src/m.py", ".venv/lib.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / ".dockerignore").write_text("*.log\n**/x/*.log\n/data\n!data/keep.csv\n./build/\n")
    assert context_files(tmp_path) == [".dockerignore", "Dockerfile", "data/keep.csv", "src/m.py", "sub/b.log"]
    (tmp_path / ".dockerignore").write_text("data/keep.csv\n!data\n")  # the last line wins, on a folder too
    assert "data/keep.csv" in context_files(tmp_path)


@pytest.mark.parametrize("name, expected", [("My Project", "my-project"), ("ML__Stuff!!", "ml-stuff"),
                                            ("x", "x-image"), ("--", "runctl-job"), ("a/b", "a/b")])
def test_repository_name(name, expected):
    assert repository_name(name) == expected


@pytest.mark.parametrize("setting, instance_type, smi, expected", [
    ("auto", "g5.xlarge", False, ["--gpus", "all"]),
    ("auto", "p4d.24xlarge", False, ["--gpus", "all"]),
    ("auto", "g4ad.xlarge", False, []),  # AMD Radeon: docker's --gpus is NVIDIA's
    ("auto", "t3.medium", False, []),
    ("auto", None, True, ["--gpus", "all"]),
    ("auto", None, False, []),
    ("none", "g5.xlarge", True, []),
    ("all", "t3.medium", False, ["--gpus", "all"]),
    ("device=0", "t3.medium", False, ["--gpus", '"device=0"']),
    ("0,1", None, True, ["--gpus", '"device=0,1"']),
])
def test_gpus_only_where_there_are_gpus(setting, instance_type, smi, expected):
    assert wants_gpus(setting, instance_type=instance_type, has_nvidia_smi=smi) == expected


def test_container_command_passes_env_by_name_and_mounts_same_paths():
    cmd = container_command("img:tag", ["python", "train.py"], ["RUNCTL_JOB_ID", "SECRET"], name="runctl-j-0",
                            mounts=["/ck"], gpus=["--gpus", "all"])
    assert cmd[:4] == ["docker", "run", "--rm", "--init"]
    assert "--sig-proxy=true" in cmd and ["-v", "/ck:/ck"] == cmd[cmd.index("-v"):cmd.index("-v") + 2]
    assert ["-e", "SECRET"] == cmd[cmd.index("SECRET") - 1:cmd.index("SECRET") + 1]  # no value on the line
    assert cmd[-5:] == ["--gpus", "all", "img:tag", "python", "train.py"]


def test_in_container_argv():
    assert in_container_argv(["/venv/bin/python", "/proj/training/train.py", "--steps", "5"], "/venv/bin/python",
                             "/proj") == ["python", "training/train.py", "--steps", "5"]


def test_build_failure_names_the_step_and_the_error():
    output = ("Step 1/3 : ARG BASE_IMAGE\n ---> Running\nStep 2/3 : FROM base\n ---> abc\n"
              "Step 3/3 : RUN pip install torchy\n ---> Running in 123\nERROR: No matching distribution\n"
              "The command '/bin/sh -c pip install torchy' returned a non-zero code: 1\n")
    assert build_failure(output) == ("docker build failed at step 3/3 (RUN pip install torchy): The command "
                                     "'/bin/sh -c pip install torchy' returned a non-zero code: 1")
