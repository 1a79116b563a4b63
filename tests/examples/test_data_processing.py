"""training/examples/data_processing.py, run as a user would: under ``python -m runctl run``.

- a rehearsal interrupts it twice; each attempt resumes after the last finished shard, writes
  every shard exactly once, and the outputs hash as a straight run's;
- a real SIGTERM to runctl at a chosen moment, then a second ``runctl run`` on a "new
  machine" (the local checkpoint folder gone): the shards written before are not touched
  (same inode and mtime), the summary says how many were skipped;
- input and output in S3 (moto);
- a reader polling the output folder never sees a half-written shard;
- bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runctl.agent.status import read_status
from runctl.store.local import LocalStore
from cli_output import json_line, one_line_error

SCRIPT = Path(__file__).resolve().parents[2] / "training" / "examples" / "data_processing.py"
SHARDS = 8
SLOW = "0.3"  # seconds of work per shard: an interruption lands in the middle of one


def script(*args, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=check)


def summary_of(stdout: str) -> dict:
    return json_line(stdout, "shards_total")


def visible(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if not p.name.startswith(".")} if folder.exists() else {}


@pytest.fixture
def raw(tmp_path, cli_env) -> Path:
    """SHARDS sample input shards in tmp_path/raw."""
    script("--generate-input", SHARDS, "--input", "raw", cwd=tmp_path, env=cli_env)
    return tmp_path / "raw"


@pytest.fixture
def straight(tmp_path, cli_env, raw) -> tuple[dict, dict[str, bytes]]:
    """The summary and the output shards of the script run straight through, without runctl."""
    folder = tmp_path / "straight"
    folder.mkdir()
    done = script("--input", raw, "--output", "out", cwd=folder, env=cli_env)
    outputs = {name: path.read_bytes() for name, path in visible(folder / "out").items()}
    assert len(outputs) == SHARDS
    return summary_of(done.stdout), outputs


class Reader(threading.Thread):
    """Polls the output folder as a downstream reader would; every shard it sees must be whole."""

    def __init__(self, folder: Path, expected: dict[str, bytes]) -> None:
        super().__init__(daemon=True)
        self.folder, self.expected = folder, expected
        self.reads, self.bad = 0, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for name, path in visible(self.folder).items():
                data = path.read_bytes()
                self.reads += 1
                if data != self.expected.get(name):
                    self.bad.append((name, len(data)))
            time.sleep(0.002)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join(5)


def written_once(stderr: str) -> None:
    """Every shard was written by exactly one attempt: none was redone after a resume."""
    wrote = [line for line in stderr.splitlines() if line.startswith("wrote part-")]
    assert sorted(wrote) == [f"wrote part-{i:05d}.jsonl" for i in range(SHARDS)], stderr


def test_a_rehearsal_resumes_after_the_last_finished_shard(runctl_cli, tmp_path, raw, straight):
    summary, expected = straight
    with Reader(tmp_path / "out", expected) as reader:
        done = runctl_cli("run", SCRIPT, "--job-id", "dp", "--rehearse", "2", "--rehearse-at", "1.2s,1.2s",
                          "--", "--input", "raw", "--output", "out", "--slow", SLOW, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "verdict: PASS" in done.stdout and "2 of 2 interruptions" in done.stdout
    assert "Traceback" not in done.stderr
    result = summary_of(done.stdout)
    assert result["outputs_sha256"] == summary["outputs_sha256"]
    assert result["shards_total"] == SHARDS
    assert result["shards_skipped"] >= 2 and result["shards_processed"] >= 1  # each attempt finished a shard
    assert result["shards_skipped"] + result["shards_processed"] == SHARDS
    written_once(done.stderr)
    assert done.stderr.count("SIGTERM: ") == 2

    attempts = read_status(LocalStore(tmp_path / ".runctl" / "store"), "dp").attempts
    assert [a.reason for a in attempts] == ["interrupted", "interrupted", "completed"]
    for before, after in zip(attempts, attempts[1:]):  # runctl.progress: no shard lost or done twice
        assert after.resumed_from == before.final_snapshot is not None
        assert after.first_step == before.last_step + 1
    assert attempts[-1].last_step == SHARDS

    assert {name: path.read_bytes() for name, path in visible(tmp_path / "out").items()} == expected
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    assert reader.reads > 0 and reader.bad == []


def test_sigterm_then_a_new_run_on_a_new_machine_skips_the_finished_shards(tmp_path, cli_env, raw, straight):
    summary, expected = straight
    out = tmp_path / "out"
    command = [sys.executable, "-m", "runctl", "run", str(SCRIPT), "--job-id", "dp-term",
               "--", "--input", "raw", "--output", "out", "--slow", SLOW]
    with Reader(out, expected) as reader:
        proc = subprocess.Popen(command, cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            deadline = time.monotonic() + 30
            while len(visible(out)) < 3:  # the chosen moment: three shards written, the fourth in hand
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)  # as the machine shutting down would
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, stderr
        assert "SIGTERM: " in stderr and "Traceback" not in stderr
        assert "shards_total" not in stdout  # the summary is the finished job's
        before = {name: (p.stat().st_ino, p.stat().st_mtime_ns) for name, p in visible(out).items()}
        assert 3 <= len(before) < SHARDS

        # A new machine: only the store is left of the first run (and the output folder).
        shutil.rmtree(tmp_path / ".runctl" / "jobs")
        again = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "restored snapshot" in again.stderr
    result = summary_of(again.stdout)
    assert result["shards_skipped"] == len(before)
    assert result["shards_processed"] == SHARDS - len(before)
    assert result["outputs_sha256"] == summary["outputs_sha256"]
    after = {name: (p.stat().st_ino, p.stat().st_mtime_ns) for name, p in visible(out).items()}
    assert {name: after[name] for name in before} == before  # untouched: not written again
    assert not any(line.startswith(f"wrote {name}") for name in before for line in again.stderr.splitlines())
    assert {name: path.read_bytes() for name, path in visible(out).items()} == expected
    assert reader.reads > 0 and reader.bad == []


def test_input_and_output_in_s3(moto_server, s3_bucket, s3_client, runctl_cli, tmp_path, cli_env, straight):
    summary, expected = straight
    source, target = f"s3://{s3_bucket}/raw", f"s3://{s3_bucket}/tokens"
    script("--generate-input", SHARDS, "--input", source, cwd=tmp_path, env=cli_env)
    # Importing boto3 makes each attempt start later: interrupt a little later, work a little faster.
    done = runctl_cli("run", SCRIPT, "--job-id", "dp-s3", "--rehearse", "1", "--rehearse-at", "1.5s",
                      "--", "--input", source, "--output", target, "--slow", "0.2", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "verdict: PASS" in done.stdout
    result = summary_of(done.stdout)
    assert result["output"] == target
    assert result["outputs_sha256"] == summary["outputs_sha256"]
    assert result["shards_skipped"] >= 1 and result["shards_processed"] >= 1
    written_once(done.stderr)
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="tokens/")["Contents"]
    got = {o["Key"].removeprefix("tokens/"): s3_client.get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read()
           for o in listed}
    assert got == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--input", "missing", "--output", "out"], "input missing does not exist"),
        (["--input", "empty", "--output", "out"], "no input shards matching '*.txt'"),
        (["--input", "raw", "--output", "out", "--resume", "nope.json"], "no progress checkpoint at nope.json"),
        (["--input", "raw", "--output", "elsewhere", "--resume", "progress.json"], "give those, or start a new job"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, tmp_path, cli_env, raw):
    (tmp_path / "empty").mkdir()
    (tmp_path / "progress.json").write_text(json.dumps(
        {"input": raw.as_uri(), "output": (tmp_path / "out").as_uri(), "done": {}}))
    line = one_line_error(script(*args, cwd=tmp_path, env=cli_env, check=False))
    assert line.startswith("data_processing: error: ") and expected in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "elsewhere").exists()
