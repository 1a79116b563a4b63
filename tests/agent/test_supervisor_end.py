"""The agent's last word in status.json when it stops on an exception: bad input (a
UsageError) says what to fix, anything else says to run the same command again; the attempt
it leaves open is closed as failed or lost accordingly."""

from __future__ import annotations

import pytest

from runctl.agent.status import StatusBook, read_status
from runctl.agent.supervisor import Agent, AgentOptions
from runctl.errors import StoreError, UsageError
from runctl.models import Attempt, JobSpec, JobStatus

JOB = "job-1"


def agent_for(store, tmp_path, folder) -> Agent:
    spec = JobSpec(JOB, ("true",), store.url, str(folder), str(tmp_path / "work"))
    return Agent(spec, store, [], AgentOptions(run_dir=tmp_path / "run"))


def test_a_folder_holding_a_foreign_file_fails_the_job_saying_what_to_fix(local_store, tmp_path):
    folder = tmp_path / "ck"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "todo.txt").write_text("not runctl's")
    with pytest.raises(UsageError, match="runctl did not write"):
        agent_for(local_store, tmp_path, folder).run()
    status = read_status(local_store, JOB)
    assert status.state == "failed"
    assert status.message.startswith(f"the agent stopped: checkpoint folder {folder} holds 1 file(s) runctl did "
                                      f"not write for job {JOB}: notes/todo.txt;")
    assert "fix that first" in status.message and "run the same command again" not in status.message
    assert (folder / "notes" / "todo.txt").read_text() == "not runctl's"


@pytest.mark.parametrize(("error", "reason", "advice"), [
    (UsageError("the job's image is not allowed here"), "failed", "fix that first"),
    (StoreError("connection reset"), "lost", "run the same command again"),
])
def test_the_attempt_left_open_is_closed_failed_on_bad_input_and_lost_otherwise(local_store, tmp_path, error,
                                                                                 reason, advice):
    agent = agent_for(local_store, tmp_path, tmp_path / "ck")
    agent.book = StatusBook(local_store, JobStatus(JOB, "running", (Attempt(0, 1.0),)), lambda: 5.0)
    agent._record_end(error)
    status = read_status(local_store, JOB)
    assert status.state == "failed" and advice in status.message
    (attempt,) = status.attempts
    assert attempt.ended is not None and attempt.reason == reason
