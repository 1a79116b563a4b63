"""A job on AWS whose agent stops on bad input, in the fake cloud through the real CLI: the
group's instance ends the job at once (no boot failure counted, no replacement launched),
and what the user reads says what is wrong and to fix it first, not to run it again as it
is. (The ``cloud`` fixture asserts that no group, template or instance is left.)"""

from __future__ import annotations

from runctl.agent.group_record import boot_failures, read_group
from runctl.agent.status import read_status
from runctl.store import open_store
from job_scripts import WIPES_ITS_FOLDER_AND_FAILS


def test_an_agent_stopped_by_bad_input_ends_the_job_saying_what_to_fix(cloud, project, runctl):
    (project / "wipes.py").write_text(WIPES_ITS_FOLDER_AND_FAILS)
    done = runctl("aws", "run", "wipes.py", "--no-docker", "-t", "t3.micro", "--job-id", "wipes",
                  "--checkpoint-dir", "ck", "--timeout", "150", RUNCTL_LOCAL_MAX_RESTARTS_ON_ERRORS="1", timeout=180)
    assert done.returncode == 1, done.stderr
    (last,) = [line for line in done.stderr.splitlines() if line.startswith("runctl: job wipes failed")]
    assert "the agent stopped: checkpoint folder " in last and "holds 1 file(s) runctl did not write" in last
    assert "fix that first" in last and "run the same command again" not in last
    store = open_store(f"s3://{cloud.bucket}/runctl", session=cloud.session(), endpoint_url=cloud.endpoint)
    status = read_status(store, "wipes")
    assert status.state == "failed" and [a.reason for a in status.attempts] == ["failed"]
    assert read_group(store, "wipes")["ended"]["message"] == status.message
    assert boot_failures(store, "wipes") == []
    assert len(cloud.instances) == 1  # no replacement was launched to end it
