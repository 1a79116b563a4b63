"""`runctl checkpoint ...` finds an AWS job's snapshots without --store, as status, logs and
jobs do; `runctl jobs` tells apart a local and an S3 job of the same id."""

from __future__ import annotations

import json


def run_twice(runctl_cli, train_here, s3_bucket, tmp_path):
    (tmp_path / ".runctl.toml").write_text(f'[aws]\ns3_bucket = "{s3_bucket}"\n')
    on_aws = runctl_cli("run", train_here, "--store", f"s3://{s3_bucket}/runctl", "--job-id", "on-aws",
                        "--", "--steps", 300, "--checkpoint-every", 100)
    assert on_aws.returncode == 0, on_aws.stderr
    twin = runctl_cli("run", train_here, "--store", f"s3://{s3_bucket}/runctl", "--job-id", "twin",
                      "--", "--steps", 200, "--checkpoint-every", 100)
    assert twin.returncode == 0, twin.stderr
    here = runctl_cli("run", train_here, "--job-id", "twin", "--", "--steps", 100, "--checkpoint-every", 100)
    assert here.returncode == 0, here.stderr


def test_checkpoint_commands_find_an_aws_job_without_store(moto_server, s3_bucket, runctl_cli, train_here, tmp_path):
    run_twice(runctl_cli, train_here, s3_bucket, tmp_path)
    aws_url = f"s3://{s3_bucket}/runctl/jobs/on-aws/checkpoints"

    listed = runctl_cli("checkpoint", "list", "on-aws", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    snapshots = json.loads(listed.stdout)
    assert snapshots and all(s["url"].startswith(aws_url) for s in snapshots)
    info = runctl_cli("checkpoint", "info", "--job", "on-aws", "--output", "json")
    assert info.returncode == 0 and json.loads(info.stdout)["seq"] == snapshots[-1]["seq"], info.stderr
    verified = runctl_cli("checkpoint", "verify", "on-aws", "--all")
    assert verified.returncode == 0, verified.stderr
    restored = runctl_cli("checkpoint", "restore", "on-aws", "--to", "eval")
    assert restored.returncode == 0, restored.stderr
    assert {f["path"] for f in json.loads(info.stdout)["files"]} <= {
        str(p.relative_to(tmp_path / "eval")) for p in (tmp_path / "eval").rglob("*") if p.is_file()}

    # The same id here and on AWS: the local job is found first, as `status` finds it.
    local = runctl_cli("checkpoint", "list", "twin", "--output", "json")
    assert local.returncode == 0, local.stderr
    assert all(s["url"].startswith(f"file://{tmp_path}/.runctl/store/") for s in json.loads(local.stdout))

    missing = runctl_cli("checkpoint", "list", "nope")
    assert missing.returncode == 0 and "no complete checkpoint snapshots at" in missing.stdout


def test_jobs_tells_a_local_and_an_s3_job_of_the_same_id_apart(moto_server, s3_bucket, runctl_cli, train_here,
                                                               tmp_path):
    run_twice(runctl_cli, train_here, s3_bucket, tmp_path)
    listed = runctl_cli("jobs", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    twins = sorted((job["store"], job["attempts"][-1]["last_step"]) for job in json.loads(listed.stdout)
                   if job["job_id"] == "twin")
    assert twins == [(f"file://{tmp_path}/.runctl/store", 100), (f"s3://{s3_bucket}/runctl", 200)]
    text = runctl_cli("jobs")
    rows = [line for line in text.stdout.splitlines() if " twin " in line]
    assert len(rows) == 2 and sum(f"s3://{s3_bucket}/runctl" in row for row in rows) == 1, text.stdout
