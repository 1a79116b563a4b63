"""Lease.wait_acquire: an agent waits for a job's lease held by a live holder (the dying
instance's agent making its final snapshot durable) instead of failing."""

from __future__ import annotations

import json
import socket

import pytest

from runctl.agent.lease import Lease
from runctl.errors import UsageError
from runctl.store import layout
from clocks import Clock

JOB = "job-1"


def plant(store, **fields) -> None:
    values = dict(holder="old-agent", host="another-host", pid=1, expires=2_000.0, released=False)
    values.update(fields)
    store.write(layout.lease_key(JOB), json.dumps(values).encode())


def holder(store) -> str:
    return json.loads(store.read(layout.lease_key(JOB)).data)["holder"]


def test_waits_until_the_holder_releases(local_store):
    plant(local_store)
    clock = Clock()
    polls = []

    def sleep(seconds):
        polls.append(seconds)
        clock.now += seconds
        if len(polls) == 3:  # the old agent's final snapshot is durable: it releases
            plant(local_store, released=True)

    lease = Lease(local_store, JOB, clock=clock)
    waited = lease.wait_acquire(60, poll=0.5, sleep=sleep)
    assert polls == [0.5, 0.5, 0.5] and waited == pytest.approx(1.5)
    assert holder(local_store) == lease.holder


def test_takes_over_when_the_holder_expires(local_store):
    plant(local_store, expires=1_002.0)
    clock = Clock()
    lease = Lease(local_store, JOB, clock=clock)
    lease.wait_acquire(60, poll=1.0, sleep=lambda s: setattr(clock, "now", clock.now + s))
    assert clock.now == 1_002.0 and holder(local_store) == lease.holder


def test_takes_over_when_the_caller_says_the_holder_is_gone(local_store):
    plant(local_store)
    clock = Clock()
    lease = Lease(local_store, JOB, clock=clock)
    lease.wait_acquire(60, poll=1.0, may_take_over=lambda record: clock.now >= 1_003.0,
                       sleep=lambda s: setattr(clock, "now", clock.now + s))
    assert clock.now == 1_003.0 and holder(local_store) == lease.holder


def test_gives_up_after_the_timeout_naming_the_holder(local_store):
    plant(local_store)
    clock = Clock()
    with pytest.raises(UsageError, match="old-agent.*waited 5s"):
        Lease(local_store, JOB, clock=clock).wait_acquire(5, poll=1.0,
                                                          sleep=lambda s: setattr(clock, "now", clock.now + s))


def test_stops_waiting_when_told(local_store):
    plant(local_store)
    with pytest.raises(UsageError, match="cancelled"):
        Lease(local_store, JOB, clock=Clock()).wait_acquire(60, give_up=lambda: "the job was cancelled",
                                                            sleep=lambda s: None)


def test_the_same_holder_takes_it_again(local_store):
    lease = Lease(local_store, JOB, clock=Clock())
    lease.acquire()
    lease.acquire()  # renews, as the Agent does when the resident agent took it for it
    assert holder(local_store) == lease.holder
    with pytest.raises(UsageError, match="already running"):
        Lease(local_store, JOB, clock=Clock()).acquire()
    assert socket.gethostname()
