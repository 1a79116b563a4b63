"""An agent that stops, however it stops, leaves status.json in a final state, never "running".

The agent runs in a child process (it makes itself a subreaper and installs signal handlers)
on a local store that starts failing in the middle of the run with an exception the agent
does not expect: a foreign one (a bug, an unwrapped library error) or a KeyboardInterrupt.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runctl.agent.status import FINAL_STATES, read_status
from runctl.store.local import LocalStore

BREAKING_AGENT = r"""
import json, sys
from pathlib import Path

from runctl.agent.supervisor import Agent, AgentOptions
from runctl.models import JobSpec
from runctl.store.local import LocalStore

work, kind = Path(sys.argv[1]), sys.argv[2]


class BreakingStore(LocalStore):  # checkpoint uploads break the way the test asks
    def upload(self, path, key, **kw):
        raise KeyboardInterrupt() if kind == "KeyboardInterrupt" else RuntimeError("injected: the client broke")


script = work / "s.py"
script.write_text("import runctl\nrunctl.save_atomic(runctl.checkpoint_dir() / 'ckpt', 'x')\n")
spec = JobSpec("breaks", (sys.executable, str(script)), str(work / "store"), str(work / "ckpt"), str(work))
agent = Agent(spec, BreakingStore(work / "store"), [], AgentOptions(run_dir=work / "run", quiet_period=0.1))
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
