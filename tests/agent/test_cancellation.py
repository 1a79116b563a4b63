"""The cancel marker and the interruption source that acts on it: one non-restartable stop
once the job is marked cancelled, the marker looked at once per interval."""

from __future__ import annotations

from runctl.agent.cancellation import CancelSource, cancelled, mark_cancelled
from runctl.testing import MemoryStore


def test_a_cancelled_job_gets_one_stop_that_is_not_restartable():
    store = MemoryStore()
    source = CancelSource(store, "j1", interval=1.0)
    assert source.poll(100.0) is None and cancelled(store, "j1") is None
    mark_cancelled(store, "j1", by="alice", clock=lambda: 100.5)
    assert source.poll(100.5) is None  # looked at again only once the interval has passed
    notice = source.poll(101.0)
    assert (notice.source, notice.action, notice.restartable) == ("user", "stop-job", False)
    assert notice.detail == "cancelled by alice"
    assert source.poll(200.0) is None  # said once
