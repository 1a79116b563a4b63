"""runctl run NAME: a [jobs.NAME] of .runctl.toml run through the real CLI, its keys
overridden by options and its args followed by those after --; an unknown name names the
jobs there are; a file of the same name wins over a job."""

from __future__ import annotations

import json
import re

SCRIPT = """\
import json, os, sys
from pathlib import Path

folder = Path(os.environ["RUNCTL_CHECKPOINT_DIR"])
(folder / "last.txt").write_text("saved")
print(json.dumps({"argv": sys.argv[1:], "greeting": os.environ.get("GREETING"), "checkpoints": str(folder)}))
"""

CONFIG = """\
[jobs.train]
script = "show.py"
args = ["--lr", "0.1"]
checkpoint_dir = "ckpt"
resume_args = ["--resume", "{checkpoint}"]
max_restarts = 2

[jobs.train.env]
GREETING = "hello from the job table"

[jobs.eval]
script = "evaluate.py"
"""


def printed(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def job_spec(tmp_path, job_id: str) -> dict:
    return json.loads((tmp_path / ".runctl" / "store" / "jobs" / job_id / "job.json").read_text())


def test_a_named_job_runs_with_its_table_and_the_options_override_it(runctl_cli, tmp_path):
    (tmp_path / "show.py").write_text(SCRIPT)
    (tmp_path / ".runctl.toml").write_text(CONFIG)

    done = runctl_cli("run", "train")
    assert done.returncode == 0, done.stderr
    assert printed(done.stdout) == {"argv": ["--lr", "0.1"], "greeting": "hello from the job table",
                                    "checkpoints": str(tmp_path / "ckpt")}
    assert (tmp_path / "ckpt" / "last.txt").read_text() == "saved"
    job_id = re.search(r"runctl: job (\S+), store", done.stderr).group(1)
    spec = job_spec(tmp_path, job_id)
    assert spec["max_restarts"] == 2 and spec["resume_args"] == ["--resume", "{checkpoint}"]

    # Its id is the one of the command it stands for (the same script and arguments here):
    # that job completed, so the spelled-out command is its next run.
    spelled_out = runctl_cli("run", "show.py", "--checkpoint-dir", "ckpt2", "--output", "json", "--", "--lr", "0.1")
    assert spelled_out.returncode == 0, spelled_out.stderr
    assert json.loads(spelled_out.stdout)["job_id"] == f"{job_id}-2"

    again = runctl_cli("run", "train", "--max-restarts", "0", "--resume-args", "--from {checkpoint}",
                       "--checkpoint-dir", "ckpt3", "--output", "json", "--", "--extra")
    assert again.returncode == 0, again.stderr
    assert printed(again.stderr) == {"argv": ["--lr", "0.1", "--extra"], "greeting": "hello from the job table",
                                     "checkpoints": str(tmp_path / "ckpt3")}
    spec = job_spec(tmp_path, json.loads(again.stdout)["job_id"])
    assert spec["max_restarts"] == 0 and spec["resume_args"] == ["--from", "{checkpoint}"]
    assert spec["env"] == {"GREETING": "hello from the job table"}


def test_an_unknown_name_names_the_jobs_there(runctl_cli, tmp_path):
    (tmp_path / ".runctl.toml").write_text(CONFIG)
    done = runctl_cli("run", "trian")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "runctl: error: command not found: trian (not a file here, nor a program on PATH), "
        "or a job of .runctl.toml: eval, train"]

    missing = runctl_cli("run", "eval")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "runctl: error: script not found: evaluate.py (the script of [jobs.eval])"


def test_a_file_of_the_same_name_wins_over_the_job(runctl_cli, tmp_path):
    (tmp_path / "show.py").write_text(SCRIPT)
    (tmp_path / ".runctl.toml").write_text(CONFIG.replace("[jobs.train]", "[jobs.\"show.py\"]")
                                           .replace("[jobs.train.env]", "[jobs.\"show.py\".env]"))
    done = runctl_cli("run", "show.py")
    assert done.returncode == 0, done.stderr
    assert printed(done.stdout)["argv"] == [] and printed(done.stdout)["greeting"] is None
    assert "show.py is a file here: running it, not [jobs.show.py]" in done.stderr
