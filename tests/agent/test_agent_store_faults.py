"""The agent on a store that fails under it.

- An agent that stops, however it stops, leaves status.json in a final state, never
  "running": a local store starts failing mid-run with an exception the agent does not
  expect (a foreign one: a bug, an unwrapped library error; or a KeyboardInterrupt).
- A connection reset during the final upload to S3 is a store error like any other: the final
  snapshot is tried again and the job completes.

The agent runs in a child process (it makes itself a subreaper and installs signal handlers).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runctl.agent.status import FINAL_STATES, read_status
from runctl.store import layout
from runctl.store.local import LocalStore
from runctl.store.s3 import S3Store
from runctl.store.snapshots import Snapshots

BREAKING_AGENT = r"""
import json, sys
from pathlib import Path

from runctl.agent.supervisor import Agent, AgentOptions
from runctl.models import JobSpec
from runctl.store.local import LocalStore
from runctl.testing import FaultyStore

work, kind = Path(sys.argv[1]), sys.argv[2]

# Every checkpoint upload breaks the way the test asks. (A folder store, not a MemoryStore:
# the test reads status.json from its own process afterwards.)
store = FaultyStore(LocalStore(work / "store"))
store.inject("upload", when="before", times=None,
             error=KeyboardInterrupt() if kind == "KeyboardInterrupt" else RuntimeError("injected: the client broke"))
script = work / "s.py"
script.write_text("import runctl\nrunctl.save_atomic(runctl.checkpoint_dir() / 'ckpt', 'x')\n")
spec = JobSpec("breaks", (sys.executable, str(script)), str(work / "store"), str(work / "ckpt"), str(work))
agent = Agent(spec, store, [], AgentOptions(run_dir=work / "run", quiet_period=0.1))
try:
    agent.run()
    print(json.dumps({"raised": None}))
except BaseException as exc:
    print(json.dumps({"raised": type(exc).__name__}))
"""


@pytest.mark.parametrize(("kind", "state"), [("RuntimeError", "failed"), ("KeyboardInterrupt", "stopped")])
def test_an_agent_stopped_by_an_unexpected_exception_leaves_a_final_state(tmp_path, cli_env, kind, state):
    done = subprocess.run([sys.executable, "-c", BREAKING_AGENT, str(tmp_path), kind], env=cli_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"raised": kind}, done.stderr
    status = read_status(LocalStore(tmp_path / "store"), "breaks")
    assert status.state == state and status.state in FINAL_STATES
    assert kind in status.message and "resume" in status.message
    (attempt,) = status.attempts
    assert attempt.ended is not None and attempt.reason == "lost" and attempt.final_snapshot is None


RESET_AGENT = r"""
import json, sys
from pathlib import Path

from urllib3.exceptions import ProtocolError

from runctl.agent.supervisor import Agent, AgentOptions
from runctl.models import JobSpec
from runctl.store.s3 import S3Store

work, bucket = Path(sys.argv[1]), sys.argv[2]
store = S3Store(bucket, "runs")
resets = [2]


def reset_the_final_upload(request, **_kwargs):  # as urllib3 raises it, unwrapped
    if request.method == "PUT" and request.url.split("?")[0].endswith("/final.bin") and resets[0]:
        resets[0] -= 1
        raise ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))


store.client.meta.events.register("before-send.s3", reset_the_final_upload)
script = work / "s.py"
script.write_text("import runctl\nrunctl.save_atomic(runctl.checkpoint_dir() / 'final.bin', 'the end')\n")
spec = JobSpec("resets", (sys.executable, str(script)), store.url, str(work / "ckpt"), str(work))
events = []
status = Agent(spec, store, [], AgentOptions(run_dir=work / "run"),
               events=lambda event: events.append(event.kind + ": " + event.message)).run()
print(json.dumps({"state": status.state, "resets_left": resets[0], "events": events}))
"""


def test_a_connection_reset_during_the_final_upload_is_retried(s3_bucket, tmp_path, cli_env):
    done = subprocess.run([sys.executable, "-c", RESET_AGENT, str(tmp_path), s3_bucket], env=cli_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"] == "completed" and result["resets_left"] == 0, result
    assert sum("connection to S3 failed" in event for event in result["events"]) == 2, result
    store = S3Store(s3_bucket, "runs")
    snapshots = Snapshots(store, layout.checkpoints_prefix("resets"))
    latest = snapshots.latest()
    assert [f.path for f in latest.files] == ["final.bin"]
    (attempt,) = read_status(store, "resets").attempts
    assert (attempt.reason, attempt.final_snapshot) == ("completed", latest.seq)
    snapshots.restore(latest, tmp_path / "back")
    assert (tmp_path / "back" / "final.bin").read_text() == "the end"
