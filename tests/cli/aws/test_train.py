"""runctl aws train / aws logs against moto (EC2 + S3) and a resident agent running here
for the emulated instance: code upload, the job's exit code, --timeout, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from runctl.agent.assignment import read_agent_record, read_assignment

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def aws_env(moto_reset, cli_env):
    env = {**cli_env, **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
    env.pop("AWS_EC2_METADATA_SERVICE_ENDPOINT", None)
    return env


@pytest.fixture
def instance(aws_env):
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1")
    reply = ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1, InstanceType="t3.micro")
    return reply["Instances"][0]["InstanceId"]


@pytest.fixture
def project(tmp_path, s3_bucket):
    root = tmp_path / "proj"
    (root / "training").mkdir(parents=True)
    shutil.copy(REPO / "training" / "train.py", root / "training" / "train.py")
    (root / "fail.py").write_text("import sys\nprint('boom', flush=True)\nsys.exit(3)\n")
    (root / "secret.py").write_text("print('never')\n")
    (root / ".runctlignore").write_text("secret.py\n")
    (root / ".runctl.toml").write_text(f'[aws]\ns3_bucket = "{s3_bucket}"\nregion = "us-east-1"\n\n'
                                       "[checkpoint]\nsync_interval = 0.5\n\n[local]\ngrace_period = 10\n")
    return root


@pytest.fixture
def agent(tmp_path, aws_env, instance, s3_bucket):
    """A resident agent for the emulated instance, on the store aws train uses by default."""
    log = open(tmp_path / "resident.log", "ab")
    env = {**aws_env, "RUNCTL_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "runctl.agent.resident", "--store", f"s3://{s3_bucket}/runctl",
                             "--instance-id", instance, "--no-spot-notices", "--heartbeat-interval", "0.5",
                             "--poll-interval", "0.2"], env=env, cwd=tmp_path, stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def runctl(env, cwd, *args, timeout=90):
    return subprocess.run([sys.executable, "-m", "runctl", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def store(bucket):
    from runctl.store.s3 import S3Store

    return S3Store(bucket, "runctl")


def test_train_uploads_the_code_runs_it_on_the_agent_and_exits_with_its_code(
        aws_env, project, instance, agent, s3_bucket, straight_weights):
    job_store = store(s3_bucket)
    deadline = time.monotonic() + 20
    while read_agent_record(job_store, instance) is None and time.monotonic() < deadline:
        time.sleep(0.1)

    done = runctl(aws_env, project, "aws", "train", instance, "training/train.py", "--wait", "--job-id", "one",
                  "--", "--steps", "300", "--checkpoint-every", "50")
    assert done.returncode == 0, done.stderr
    assert "uploaded 4 of 4 files" in done.stderr  # train.py, fail.py, .runctlignore, .runctl.toml
    final = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert final["weights_sha256"] == straight_weights(300)
    assert "job one completed" in done.stderr
    spec = json.loads(job_store.read("jobs/one/job.json").data)
    assert spec["command"] == ["python", "training/train.py", "--steps", "300", "--checkpoint-every", "50"]
    assert spec["code_tree"] and spec["sync_interval"] == 0.5 and spec["grace_period"] == 10

    # Same code again: nothing to upload. A failing script: exit 1, its output shown.
    failed = runctl(aws_env, project, "aws", "train", instance, "fail.py", "--wait", "--job-id", "two")
    assert failed.returncode == 1, failed.stderr
    assert "uploaded 0 of 4 files" in failed.stderr and "boom" in failed.stdout
    assert "job two failed: the script failed (exit code 3)" in failed.stderr

    # aws logs by instance: the job last sent there.
    logs = runctl(aws_env, project, "aws", "logs", instance)
    assert logs.returncode == 0, logs.stderr
    assert "boom" in logs.stdout and "runs job two" in logs.stderr

    # --timeout: exit 1 with a clear line; the job goes on (JSON report on stdout).
    slow = runctl(aws_env, project, "-o", "json", "aws", "train", instance, "training/train.py", "--wait",
                  "--timeout", "1.5", "--job-id", "slow", "--", "--steps", "10000000")
    assert slow.returncode == 1, slow.stderr
    report = json.loads(slow.stdout)
    assert report["state"] == "timed-out" and "runctl aws logs slow -f" in report["message"]
    assert read_assignment(job_store, instance)[0].state in ("assigned", "running")

    # The instance is busy with it: a second job is refused (exit 2).
    busy = runctl(aws_env, project, "aws", "train", instance, "fail.py", "--job-id", "three")
    assert busy.returncode == 2 and "busy with job slow" in busy.stderr


def test_train_refusals(aws_env, project, instance, s3_bucket):
    import boto3

    ignored = runctl(aws_env, project, "aws", "train", instance, "secret.py")
    assert ignored.returncode == 2 and "--include secret.py" in ignored.stderr
    missing = runctl(aws_env, project, "aws", "train", instance, "nope.py")
    assert missing.returncode == 2 and "not a file" in missing.stderr
    unknown = runctl(aws_env, project, "aws", "train", "i-0123456789abcdef0", "fail.py")
    assert unknown.returncode == 3 and "not found" in unknown.stderr
    stray = runctl(aws_env, project, "aws", "train", instance, "fail.py", "--steps", "3")
    assert stray.returncode == 2 and "--" in stray.stderr

    # Without --wait it returns at once; --include brings an ignored file along.
    sent = runctl(aws_env, project, "aws", "train", instance, "secret.py", "--include", "secret.py",
                  "--job-id", "sent")
    assert sent.returncode == 0, sent.stderr
    assert "has not reported yet" in sent.stderr and "runctl aws watch sent" in sent.stdout
    assert read_assignment(store(s3_bucket), instance)[0].job_id == "sent"

    boto3.client("ec2", region_name="us-east-1").stop_instances(InstanceIds=[instance])
    stopped = runctl(aws_env, project, "aws", "train", instance, "fail.py")
    assert stopped.returncode == 3 and "stop" in stopped.stderr


def test_train_does_not_follow_links_out_of_the_project_and_names_them(aws_env, project, instance, s3_bucket,
                                                                       tmp_path):
    secret = "aws_secret_access_key = do-not-ship-me"
    (tmp_path / "home" / ".aws").mkdir(parents=True)
    (tmp_path / "home" / ".aws" / "credentials").write_text(secret + "\n")
    (project / "credentials").symlink_to(tmp_path / "home" / ".aws" / "credentials")
    (project / "aws-config").symlink_to(tmp_path / "home" / ".aws", target_is_directory=True)
    (project / "fail-alias.py").symlink_to("fail.py")  # within the project: uploaded as before

    sent = runctl(aws_env, project, "aws", "train", instance, "fail.py", "--job-id", "links")
    assert sent.returncode == 0, sent.stderr
    # train.py, fail.py, fail-alias.py (fail.py's blob), .runctlignore, .runctl.toml
    assert "uploaded 4 of 5 files" in sent.stderr
    assert ("skipped 2 symlinks that lead out of the project (not uploaded): aws-config, credentials"
            in sent.stderr)
    job_store = store(s3_bucket)
    for info in job_store.list("code/"):
        assert secret.encode() not in job_store.read(info.key).data, info.key


def test_aws_run_runs_the_job_in_its_group_and_the_agent_deletes_the_group(aws_env, project, s3_bucket, tmp_path,
                                                                            straight_weights):
    """aws run against moto, with this test playing the fake cloud: it starts the agent of
    the instance the job's group launches (found by its runctl:job tag)."""
    import boto3

    text = (project / ".runctl.toml").read_text().replace('region = "us-east-1"\n',
                                                             'region = "us-east-1"\nami = "ami-0123456789abcdef0"\n')
    (project / ".runctl.toml").write_text(text)
    ec2 = boto3.client("ec2", region_name="us-east-1")
    cli = subprocess.Popen([sys.executable, "-m", "runctl", "workflow", "train", "training/train.py", "--job-id",
                            "wf", "--on-demand", "--timeout", "60", "--", "--steps", "200"], cwd=project, env=aws_env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    agent = None
    try:
        deadline = time.monotonic() + 60
        instance = None
        while instance is None and time.monotonic() < deadline and cli.poll() is None:
            found = ec2.describe_instances(Filters=[{"Name": "tag:runctl:job", "Values": ["wf"]},
                                                    {"Name": "instance-state-name", "Values": ["running"]}])
            ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
            instance = ids[0] if ids else None
            time.sleep(0.2)
        assert instance is not None, cli.communicate(timeout=10)
        data = ec2.describe_instance_attribute(InstanceId=instance, Attribute="userData")["UserData"]["Value"]
        from base64 import b64decode

        from runctl.backends.aws.bootstrap import agent_command_from_user_data

        argv = agent_command_from_user_data(b64decode(data).decode(), python=sys.executable)
        log = open(tmp_path / "wf-agent.log", "ab")
        agent = subprocess.Popen([*argv, "--instance-id", instance, "--no-spot-notices", "--poll-interval", "0.2"],
                                 env={**aws_env, "RUNCTL_HOME": str(tmp_path / "wf-home")}, cwd=tmp_path,
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        out, err = cli.communicate(timeout=90)
    finally:
        for proc in (cli, agent):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert cli.returncode == 0, err
    final = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert final["weights_sha256"] == straight_weights(200)
    assert "job wf submitted: Auto Scaling group runctl-wf (on-demand" in err and "job wf completed" in err
    assert boto3.client("autoscaling", region_name="us-east-1").describe_auto_scaling_groups()[
        "AutoScalingGroups"] == []
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []
    # The agent left the group before deleting it, and did not shut down this machine, which
    # no metadata service confirmed to be the instance.
    state = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"
    ec2.terminate_instances(InstanceIds=[instance])


def test_following_gives_up_on_an_agent_that_never_reports_stops_beating_or_is_reassigned(local_store):
    from runctl.agent.assignment import assign_job
    from runctl.cli._context import App
    from runctl.cli.aws._jobs import follow_job
    from runctl.store.layout import instance_agent_key

    sent = assign_job(local_store, "i-x", "j")
    now = [0.0]

    def follow(**kwargs):
        return follow_job(App(), local_store, "i-x", "j", sent.assignment_id, 0, clock=lambda: now[0],
                          sleep=lambda s: now.__setitem__(0, now[0] + s), **kwargs)

    state, message = follow(boot_timeout=10)
    assert state == "lost" and "never reported in 10s" in message
    state, message = follow(timeout=5)
    assert state == "timed-out" and "runctl aws logs j -f" in message
    local_store.write(instance_agent_key("i-x"), json.dumps({"heartbeat": time.time() - 300}).encode())
    state, message = follow()
    assert state == "lost" and "stopped beating" in message and "--job-id j" in message
    assign_job(local_store, "i-x", "other")
    state, message = follow()
    assert state == "failed" and "replaced" in message


# -- two commands racing for one instance ------------------------------------------------------------
@pytest.fixture
def racing(ec2_project, ec2_client, monkeypatch):
    """A running instance, the project's train.py, and ``meanwhile(action)``: run ``action``
    (another command, or the agent) after this command checked that the instance is free
    and uploaded the code, just before it assigns the job."""
    from runctl.cli.aws import _jobs as jobs_module

    instance = ec2_client.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1,
                                        InstanceType="t3.micro")["Instances"][0]["InstanceId"]
    (ec2_project.root / "train.py").write_text("print('train')\n")
    real_prepare = jobs_module.prepare_code

    def meanwhile(action):
        def prepare_then_act(*args, **kwargs):
            prepared = real_prepare(*args, **kwargs)
            action()
            return prepared

        monkeypatch.setattr(jobs_module, "prepare_code", prepare_then_act)

    return types.SimpleNamespace(instance=instance, store=store(ec2_project.bucket), meanwhile=meanwhile)


@pytest.mark.parametrize("before", [None, "done"], ids=["a fresh instance", "after a finished job"])
def test_the_loser_of_a_race_for_an_instance_says_it_lost_not_sent(before, racing, run_cli):
    from runctl.agent.assignment import assign_job, read_assignment, with_state, write_assignment_if

    if before:
        previous = assign_job(racing.store, racing.instance, "previous")
        etag = read_assignment(racing.store, racing.instance)[1]
        write_assignment_if(racing.store, racing.instance, with_state(previous, before, time.time()), etag)
    racing.meanwhile(lambda: assign_job(racing.store, racing.instance, "winner"))

    code, out, err = run_cli("aws", "train", racing.instance, "train.py", "--job-id", "loser")
    assert code == 3, err
    assert out == "" and "sent to" not in err
    lines = [line for line in err.splitlines() if line.startswith("runctl: error:")]
    assert lines == [f"runctl: error: instance {racing.instance} was just given job winner by another command; "
                     "job loser was not sent (wait for it: runctl aws logs winner -f, or use another instance)"]
    assert read_assignment(racing.store, racing.instance)[0].job_id == "winner"


def test_an_agent_finishing_its_job_meanwhile_is_no_lost_race(racing, run_cli):
    """The agent moving the same assignment on (running -> done) while the code uploads
    changes its version too; that is not another command: the job is sent."""
    from runctl.agent.assignment import assign_job, read_assignment, with_state, write_assignment_if

    previous = assign_job(racing.store, racing.instance, "previous")
    running = with_state(previous, "running", time.time())
    write_assignment_if(racing.store, racing.instance, running, read_assignment(racing.store, racing.instance)[1])

    def agent_finishes():
        etag = read_assignment(racing.store, racing.instance)[1]
        write_assignment_if(racing.store, racing.instance, with_state(running, "done", time.time()), etag)

    racing.meanwhile(agent_finishes)
    code, out, err = run_cli("aws", "train", racing.instance, "train.py", "--job-id", "next")
    assert code == 0, err
    assert f"job next sent to {racing.instance}" in out
    assert read_assignment(racing.store, racing.instance)[0].job_id == "next"


def test_an_empty_store_is_refused_not_taken_for_the_default(racing, run_cli):
    code, out, err = run_cli("aws", "train", racing.instance, "train.py", "--store", "")
    assert code == 2 and out == ""
    assert err.splitlines() == ["runctl: error: --store is empty; give a folder, file:///abs/path or "
                                "s3://bucket/prefix, or leave --store out for the default store"]
    assert read_assignment(racing.store, racing.instance) is None


def test_train_runs_a_job_of_two_processes_under_torchrun_on_the_agent(aws_env, project, instance, agent, s3_bucket):
    """--nproc-per-node reaches the instance's agent in job.json; it starts the script under
    torchrun there, and the job ends with the weights of the same two-process run here."""
    pytest.importorskip("torch")
    script = REPO / "training" / "examples" / "train_ddp.py"
    shutil.copy(script, project / "train_ddp.py")
    args = ["--steps", "60", "--checkpoint-every", "20"]
    straight = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               str(script), *args], cwd=project.parent, capture_output=True, text=True, timeout=300,
                              env={k: v for k, v in aws_env.items() if not k.startswith("RUNCTL_")})
    assert straight.returncode == 0, straight.stderr

    done = runctl(aws_env, project, "aws", "train", instance, "train_ddp.py", "--nproc-per-node", "2", "--wait",
                  "--job-id", "ddp", "--", *args, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert result == json.loads([line for line in straight.stdout.splitlines() if line.startswith("{")][-1])
    assert result["world_size"] == 2
    spec = json.loads(store(s3_bucket).read("jobs/ddp/job.json").data)
    assert spec["nproc_per_node"] == "2" and spec["command"] == ["python", "train_ddp.py", *args]


def test_train_refuses_nproc_for_what_torchrun_cannot_start(aws_env, project, instance, s3_bucket):
    (project / "train.sh").write_text("#!/bin/sh\necho hi\n")
    for args, says in ((("fail.py", "--nproc-per-node", "zero"), "--nproc-per-node 'zero' is neither"),
                       (("train.sh", "--nproc-per-node", "2"), "starts a Python script under torchrun")):
        refused = runctl(aws_env, project, "aws", "train", instance, *args)
        assert refused.returncode == 2, refused.stderr
        assert says in refused.stderr and "Traceback" not in refused.stderr
    assert read_assignment(store(s3_bucket), instance) is None  # nothing was sent
    sent = runctl(aws_env, project, "aws", "train", instance, "fail.py", "--nproc-per-node", "auto", "--job-id", "a")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(store(s3_bucket).read("jobs/a/job.json").data)["nproc_per_node"] == "auto"


def test_train_takes_nproc_per_node_from_the_named_job(aws_env, project, instance, s3_bucket):
    config = project / ".runctl.toml"
    config.write_text(config.read_text() + '\n[jobs.failing]\nscript = "fail.py"\nnproc_per_node = "auto"\n')
    sent = runctl(aws_env, project, "aws", "train", instance, "failing", "--job-id", "named")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(store(s3_bucket).read("jobs/named/job.json").data)["nproc_per_node"] == "auto"
    sent = runctl(aws_env, project, "aws", "train", instance, "failing", "--nproc-per-node", "3", "--job-id", "flag")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(store(s3_bucket).read("jobs/flag/job.json").data)["nproc_per_node"] == "3"


def test_nodes_is_refused_where_it_cannot_run_before_anything_is_sent(aws_env, project, instance, s3_bucket):
    """--nodes needs a group of its own (aws run), a .py script, and for now no Docker."""
    (project / "train.sh").write_text("#!/bin/sh\necho hi\n")
    (project / "Dockerfile").write_text("FROM scratch\n")
    config = project / ".runctl.toml"
    config.write_text(config.read_text() + '\n[jobs.wide]\nscript = "fail.py"\nnodes = 2\n')
    for args, line in (
            (("aws", "train", instance, "fail.py", "--nodes", "2"),
             "aws train runs a job on one existing instance; --nodes 2 needs a group of that many: "
             "runctl aws run SCRIPT --nodes 2"),
            (("aws", "train", instance, "wide"),
             "[jobs.wide] nodes = 2 needs a group of that many instances; run it with runctl aws run"),
            (("aws", "run", "train.sh", "--nodes", "2", "--no-docker"),
             "--nodes 2 runs a Python script under torchrun on each machine, but the job runs train.sh; "
             "give it a .py script"),
            (("aws", "run", "fail.py", "--nodes", "2"), "--nodes 2 runs without Docker for now; add --no-docker"),
            (("aws", "run", "fail.py", "--nodes", "2", "--docker-image", "img:1"),
             "--nodes 2 runs without Docker for now; add --no-docker"),
            (("aws", "run", "wide"), "--nodes 2 runs without Docker for now; add --no-docker")):
        refused = runctl(aws_env, project, *args)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip().splitlines() == [f"runctl: error: {line}"]
    refused = runctl(aws_env, project, "aws", "run", "fail.py", "--nodes", "0", "--no-docker")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and "--nodes" in refused.stderr
    assert read_assignment(store(s3_bucket), instance) is None
    assert not list(store(s3_bucket).list("jobs/"))  # no job was written
