"""training/examples/model_evaluation.py on checkpoints written by a real ``runctl run training/train.py``.

- by job id in the default store, by store URL (a job URL, --store, --job), by snapshot seq,
  and from S3 (moto): the metrics name the right job, seq and step;
- the values are sensible: the trained model beats the untrained one (``--checkpoint``) on the
  training set and on held-out examples, and match an evaluation of the same checkpoint file;
- an unknown job, an empty store, a store without --job, a file that is no checkpoint: one
  line on stderr, runctl's exit codes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runctl.agent.status import read_status
from runctl.store.local import LocalStore
from cli_output import one_line_error

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "training" / "examples" / "model_evaluation.py"
TRAIN = REPO_ROOT / "training" / "train.py"
STEPS = 1500  # ~1.5 ms a step: the interruption at 0.6 s lands mid-run


def clean_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCTL_", "TRAINCTL_"))}
    env["XDG_CONFIG_HOME"] = str(folder / ".xdg-config")
    return env


def evaluate(*args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def metrics_of(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder whose default store holds job "ev": train.py for STEPS steps, interrupted once
    (its final snapshot holds the step it saved on SIGTERM) and resumed to the end."""
    folder = tmp_path_factory.mktemp("trained")
    # --keep-last-n: the interrupted attempt's snapshot stays, however many come after it.
    done = subprocess.run([sys.executable, "-m", "runctl", "run", str(TRAIN), "--job-id", "ev", "--rehearse", "1",
                           "--rehearse-at", "0.6s", "--keep-last-n", "100",
                           "--", "--steps", str(STEPS), "--checkpoint-every", "100"],
                          cwd=folder, env=clean_env(folder), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture(scope="module")
def untrained(trained) -> dict:
    """The metrics of train.py's initial model (step 0), through --checkpoint."""
    spec = importlib.util.spec_from_file_location("train_for_evaluation_tests", TRAIN)
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    path = train.save_checkpoint(trained / "untrained", train.init_state(0))
    return metrics_of(evaluate("--checkpoint", path, cwd=trained, env=clean_env(trained)))


def sensible(metrics: dict, untrained: dict) -> None:
    for name in ("train", "heldout"):
        got, base = metrics[name], untrained[name]
        assert got["n"] == 512
        assert 0 < got["mse"] < base["mse"] / 5 and 0 < got["mae"] < base["mae"]
        assert got["mae"] ** 2 <= got["mse"] * 1.0000001  # Jensen: a check that mae and mse are what they say


def attempts_of(trained: Path):
    attempts = read_status(LocalStore(trained / ".runctl" / "store"), "ev").attempts
    assert [a.reason for a in attempts] == ["interrupted", "completed"]
    return attempts


def test_by_job_id_in_the_default_store(trained, untrained):
    metrics = metrics_of(evaluate("ev", cwd=trained, env=clean_env(trained)))
    latest = attempts_of(trained)[-1].final_snapshot
    assert (metrics["job"], metrics["seq"], metrics["step"]) == ("ev", latest, STEPS)
    assert metrics["checkpoint"] == f"ckpt-{STEPS:06d}.json"
    sensible(metrics, untrained)
    assert untrained["step"] == 0 and untrained["job"] is None and untrained["seq"] is None

    # The same numbers as the checkpoint file itself, evaluated with --checkpoint.
    local = trained / ".runctl" / "jobs" / "ev" / "checkpoints" / metrics["checkpoint"]
    direct = metrics_of(evaluate("--checkpoint", local, cwd=trained, env=clean_env(trained)))
    assert (direct["train"], direct["heldout"], direct["step"]) == (metrics["train"], metrics["heldout"], STEPS)


def test_by_store_url_and_by_seq(trained, untrained, tmp_path):
    env = clean_env(tmp_path)  # elsewhere: the default store here is empty
    store = trained / ".runctl" / "store"
    first, last = attempts_of(trained)
    for args in ([f"{store}/jobs/ev"], [f"{store.as_uri()}/jobs/ev/checkpoints"], ["--store", store, "ev"],
                 [store, "--job", "ev"]):
        metrics = metrics_of(evaluate(*args, cwd=tmp_path, env=env))
        assert (metrics["job"], metrics["seq"], metrics["step"]) == ("ev", last.final_snapshot, STEPS), args

    out = tmp_path / "metrics" / "older.json"
    done = evaluate(f"{store}/jobs/ev", "--seq", first.final_snapshot, "--metrics-out", out, cwd=tmp_path, env=env)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    older = json.loads(out.read_text())
    assert (older["seq"], older["step"]) == (first.final_snapshot, first.last_step)  # the step saved on SIGTERM
    assert 0 < older["step"] < STEPS
    sensible(older, untrained)


def test_from_an_s3_store(moto_server, s3_bucket, runctl_cli, train_here, tmp_path, cli_env):
    url = f"s3://{s3_bucket}/runs"
    done = runctl_cli("run", train_here, "--store", url, "--job-id", "ev-s3", "--", "--steps", 300)
    assert done.returncode == 0, done.stderr
    metrics = metrics_of(evaluate(f"{url}/jobs/ev-s3", cwd=tmp_path, env=cli_env))
    assert (metrics["job"], metrics["step"]) == ("ev-s3", 300)
    assert metrics["snapshot"].startswith(f"{url}/jobs/ev-s3/checkpoints/")
    assert metrics_of(evaluate("--store", url, "ev-s3", cwd=tmp_path, env=cli_env)) == metrics


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["nosuch"], 3, "no job nosuch (jobs in file://"),
        (["ev", "--store", "empty"], 3, "no job ev (there are no jobs in file://"),
        ([".runctl/store"], 2, "is a store, not a job's checkpoints; add --job JOB_ID (jobs in"),
        (["ev", "--seq", "99"], 3, "no complete checkpoint snapshot 99"),
        (["--checkpoint", "notes.txt"], 2, "notes.txt is not a checkpoint of training/train.py"),
        (["--checkpoint", "missing.json"], 2, "checkpoint missing.json does not exist"),
    ],
)
def test_errors_are_one_line(args, code, expected, trained):
    (trained / "empty").mkdir(exist_ok=True)
    (trained / "notes.txt").write_text("not json\n")
    done = evaluate(*args, cwd=trained, env=clean_env(trained))
    line = one_line_error(done, code)
    assert line.startswith("model_evaluation: error: ") and expected in line
    if "(jobs in" in expected:
        assert line.endswith(": ev)")
