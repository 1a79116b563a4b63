"""status.json readers: a running job whose agent stopped beating is seen as gone."""

from __future__ import annotations

import json
import time

from runctl.agent.status import STALE_AFTER_S, agent_gone
from runctl.models import JobStatus
from runctl.store import layout
from runctl.store.local import LocalStore


def test_agent_gone_only_for_unfinished_jobs_with_an_old_heartbeat():
    now = 1_000_000.0
    assert agent_gone(JobStatus("j", "running", heartbeat=now - STALE_AFTER_S - 1), now)
    assert not agent_gone(JobStatus("j", "running", heartbeat=now - 1), now)
    assert not agent_gone(JobStatus("j", "completed", heartbeat=now - 10 * STALE_AFTER_S), now)


def test_logs_follow_ends_when_the_agent_is_gone(tmp_path, runctl_cli):
    store = LocalStore(tmp_path / "store")
    dead = JobStatus("dead", "running", heartbeat=time.time() - 10 * STALE_AFTER_S)
    store.write(layout.status_key("dead"), json.dumps(dead.to_dict()).encode())
    store.write(layout.logs_prefix("dead", 0) + "000000.log", b"last words\n")

    result = runctl_cli("logs", "dead", "-f", "--store", store.url, timeout=20)

    assert result.returncode == 0
    assert result.stdout == "last words\n"
    assert "stopped beating" in result.stderr

    status = runctl_cli("status", "dead", "--store", store.url)
    assert "the agent may be gone" in status.stdout


def test_a_passing_store_error_on_status_write_is_retried():
    from runctl.agent.status import StatusBook, read_status
    from runctl.errors import StoreError
    from runctl.testing import FaultyStore, MemoryStore

    store = FaultyStore(MemoryStore())
    store.inject("write", when="before", error=StoreError("503 slow down"), times=2)
    book = StatusBook(store, JobStatus("j", "running"))
    book._save(backoff_s=0.01)
    assert read_status(store, "j").state == "running"
    assert [outcome for method, _, outcome in store.calls if method == "write"] == [
        "failed before", "failed before", "ok"]


def test_close_lost_ends_an_unclosed_last_attempt_at_its_last_heartbeat():
    from runctl.agent.status import close_lost
    from runctl.models import Attempt

    done = Attempt(0, 100.0, ended=150.0, reason="interrupted")
    open_one = Attempt(1, 200.0)
    closed = close_lost(JobStatus("j", "running", (done, open_one), heartbeat=260.0))
    assert closed == (done, Attempt(1, 200.0, ended=260.0, reason="lost"))
    # No heartbeat after it started: it ended where it started, at the latest.
    assert close_lost(JobStatus("j", "running", (open_one,)))[-1].ended == 200.0
    finished = (done,)
    assert close_lost(JobStatus("j", "interrupted", finished, heartbeat=999.0)) == finished
