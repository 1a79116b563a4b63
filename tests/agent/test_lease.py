"""lease.json: which agent may run the job now. Taken and renewed with conditional writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from runctl.agent.lease import Lease, LeaseRecord, holder_is_gone
from runctl.errors import PreconditionFailed, UsageError
from runctl.store import layout
from clocks import Clock

JOB = "job-1"


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def record(store) -> dict:
    return json.loads(store.read(layout.lease_key(JOB)).data)


def plant(store, **fields) -> None:
    values = dict(holder="other", host=socket.gethostname(), pid=1, expires=10_000.0, released=False)
    values.update(fields)
    store.write(layout.lease_key(JOB), json.dumps(values).encode())


def test_acquire_a_free_job(local_store):
    clock = Clock()
    lease = Lease(local_store, JOB, ttl=60, clock=clock)
    lease.acquire()
    held = record(local_store)
    assert held["holder"] == lease.holder and held["expires"] == 1060.0 and not held["released"]


def test_a_live_holder_keeps_the_job(local_store):
    Lease(local_store, JOB, clock=Clock()).acquire()  # this live process holds it
    with pytest.raises(UsageError, match="already running") as excinfo:
        Lease(local_store, JOB, clock=Clock()).acquire()
    assert "--job-id" in str(excinfo.value)


def test_a_dead_holder_on_this_host_is_taken_over_at_once(local_store):
    plant(local_store, pid=dead_pid(), expires=10_000.0)  # not expired
    lease = Lease(local_store, JOB, clock=Clock(1_000.0))
    lease.acquire()
    assert record(local_store)["holder"] == lease.holder


def test_a_holder_on_another_host_is_not_judged_by_pid(local_store):
    plant(local_store, host="some-other-machine", pid=dead_pid(), expires=10_000.0)
    with pytest.raises(UsageError, match="already running"):
        Lease(local_store, JOB, clock=Clock(1_000.0)).acquire()


def test_an_expired_lease_is_taken_over(local_store):
    plant(local_store, host="some-other-machine", pid=1, expires=999.0)
    lease = Lease(local_store, JOB, clock=Clock(1_000.0))
    lease.acquire()
    assert record(local_store)["holder"] == lease.holder


def test_release_frees_the_job_and_renew_extends_it(local_store):
    clock = Clock()
    first = Lease(local_store, JOB, ttl=30, clock=clock)
    first.acquire()
    clock.now = 1_010.0
    first.renew()
    assert record(local_store)["expires"] == 1_040.0
    first.release()
    assert record(local_store)["released"]
    second = Lease(local_store, JOB, clock=clock)
    second.acquire()
    assert record(local_store)["holder"] == second.holder
    first.release()  # nothing of its own left to release: no effect, no error
    assert record(local_store)["holder"] == second.holder and not record(local_store)["released"]


def test_renew_after_a_takeover_fails_and_release_leaves_the_new_holder(local_store):
    clock = Clock()
    old = Lease(local_store, JOB, ttl=10, clock=clock)
    old.acquire()
    clock.now = 2_000.0  # old's lease expired (it hung)
    new = Lease(local_store, JOB, ttl=10, clock=clock)
    new.acquire()
    with pytest.raises(PreconditionFailed):
        old.renew()
    old.release()
    assert record(local_store)["holder"] == new.holder


def test_losing_the_race_is_a_usage_error(local_store):
    class RacingStore:
        """Someone else writes lease.json between our read and our conditional write."""

        def __init__(self, inner):
            self.inner = inner

        def read(self, key):
            blob = self.inner.read(key)
            plant(self.inner, holder="racer", pid=dead_pid(), expires=0.0)
            return blob

        def write(self, key, data, **kwargs):
            return self.inner.write(key, data, **kwargs)

    plant(local_store, pid=dead_pid())
    with pytest.raises(UsageError, match="just taken by another agent"):
        Lease(RacingStore(local_store), JOB, clock=Clock()).acquire()


@pytest.mark.parametrize(
    ("fields", "now", "gone"),
    [
        ({"released": True}, 0.0, True),
        ({"expires": 5.0}, 5.0, True),
        ({"expires": 5.0}, 4.9, False),
        ({"host": "elsewhere", "expires": 100.0}, 0.0, False),
    ],
)
def test_holder_is_gone(fields, now, gone):
    values = dict(holder="h", host="here", pid=os.getpid(), expires=100.0, released=False)
    values.update(fields)
    assert holder_is_gone(LeaseRecord(**values), now, "here") is gone
