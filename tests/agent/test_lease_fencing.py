"""Fenced leases: after an ambiguous conditional write the lease is read back and judged by
the write's token; every holder change bumps the generation; a lost lease says so."""

from __future__ import annotations

import json

import pytest

from runctl.agent.lease import Lease, must_kill_at, must_stop_at
from runctl.agent.supervisor import Agent, AgentOptions
from runctl.errors import LeaseLost, PreconditionFailed, StoreError, UsageError
from runctl.models import JobSpec
from runctl.store import layout
from runctl.testing import FaultyStore
from clocks import Clock

JOB = "job-1"
KEY = layout.lease_key(JOB)


def record(store) -> dict:
    return json.loads(store.read(KEY).data)


@pytest.mark.parametrize("lost_as", [PreconditionFailed("412: our own write, retried"),
                                     StoreError("connection reset after the PUT")])
def test_a_renewal_whose_response_was_lost_keeps_the_lease(any_store, lost_as):
    """Issue 12: the PUT landed, its answer was lost, the retry got 412. The agent must read
    the lease back, find its own token and keep renewing (it used to renew in vain)."""
    faulty = FaultyStore(any_store)
    clock = Clock()
    lease = Lease(faulty, JOB, ttl=60, clock=clock)
    lease.acquire()
    clock.now = 1_010.0
    faulty.inject("write", key=KEY, when="after", error=lost_as)
    lease.renew()  # landed: no error
    assert ("write", KEY, "failed after") in faulty.calls
    assert record(any_store)["expires"] == 1_070.0 and lease.held_until == 1_070.0
    clock.now = 1_020.0
    lease.renew()  # the etag adopted from the read-back: the next renewal lands too
    assert record(any_store)["expires"] == 1_080.0 and record(any_store)["holder"] == lease.holder


def test_a_renewal_that_never_arrived_keeps_the_old_lease_and_can_retry(local_store):
    faulty = FaultyStore(local_store)
    clock = Clock()
    lease = Lease(faulty, JOB, ttl=60, clock=clock)
    lease.acquire()
    clock.now = 1_010.0
    faulty.inject("write", key=KEY, when="before")
    with pytest.raises(StoreError) as excinfo:
        lease.renew()
    assert not isinstance(excinfo.value, LeaseLost)  # not lost: just not renewed yet
    assert lease.held_until == 1_060.0
    lease.renew()
    assert lease.held_until == 1_070.0 and record(local_store)["expires"] == 1_070.0


def landed_unseen_renewal(store) -> tuple[Lease, Clock]:
    """A held lease whose last renewal landed while its answer and the read-back were lost:
    lease.json is ours under an etag the Lease has not seen."""
    faulty = FaultyStore(store)
    clock = Clock()
    lease = Lease(faulty, JOB, ttl=60, clock=clock)
    lease.acquire()
    clock.now = 1_010.0
    faulty.inject("write", key=KEY, when="after")
    faulty.inject("read", key=KEY, when="before")
    with pytest.raises(StoreError) as excinfo:
        lease.renew()  # landed, but nothing says so
    assert not isinstance(excinfo.value, LeaseLost)
    return lease, clock


def test_a_landed_renewal_whose_read_back_failed_too_is_still_ours(local_store):
    """The PUT landed, its answer was lost and so was the read-back after it; the next
    renewal meets 412 (our own write changed the etag) and reads back a lease of ours with an
    older token. The agent keeps its lease (a chaos run once reported it lost to itself)."""
    lease, clock = landed_unseen_renewal(local_store)
    assert record(local_store)["expires"] == 1_070.0
    clock.now = 1_020.0
    lease.renew()
    assert not lease.lost and lease.held_until == 1_080.0
    assert record(local_store)["expires"] == 1_080.0 and record(local_store)["holder"] == lease.holder
    assert lease.fence() == 1


def test_a_release_after_a_landed_renewal_whose_read_back_failed_releases_the_lease(any_store):
    """Its conditional write meets 412 (our own renewal changed the etag) and reads back a
    lease of ours with an older token: still ours, so released from there. It used to be
    taken for another holder's, and the next agent waited a TTL for nothing."""
    lease, clock = landed_unseen_renewal(any_store)
    clock.now = 1_020.0
    lease.release()
    held = record(any_store)
    assert held["released"] and held["holder"] == lease.holder and held["generation"] == 1
    nxt = Lease(any_store, JOB, ttl=60, clock=clock)
    nxt.acquire()  # at once: no "already running", no wait for the expiry
    assert record(any_store)["holder"] == nxt.holder and nxt.generation == 2


def test_a_release_that_landed_although_it_reported_an_error_is_done(local_store):
    faulty = FaultyStore(local_store)
    lease = Lease(faulty, JOB, ttl=60, clock=Clock())
    lease.acquire()
    faulty.inject("write", key=KEY, when="after", error=PreconditionFailed("412: our own write, retried"))
    lease.release()  # the read-back shows our token, released: nothing more to write
    writes = [call for call in faulty.calls if call[0] == "write"]
    assert writes == [("write", KEY, "ok"), ("write", KEY, "failed after")]
    assert record(local_store)["released"]
    lease.release()  # nothing of its own left to release
    assert [call for call in faulty.calls if call[0] == "write"] == writes


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_release_whose_read_back_failed_raises_and_can_be_tried_again(local_store, when):
    """Whether the release landed stays unknown: the store's error surfaces (not a lost lease),
    and the next try finishes the release (or finds it done)."""
    faulty = FaultyStore(local_store)
    lease = Lease(faulty, JOB, ttl=60, clock=Clock())
    lease.acquire()
    faulty.inject("write", key=KEY, when=when)
    faulty.inject("read", key=KEY, when="before")
    with pytest.raises(StoreError) as excinfo:
        lease.release()
    assert not isinstance(excinfo.value, LeaseLost)
    assert record(local_store)["released"] == (when == "after")
    lease.release()
    assert record(local_store)["released"] and record(local_store)["holder"] == lease.holder
    nxt = Lease(local_store, JOB, ttl=60, clock=Clock())
    nxt.acquire()
    assert record(local_store)["holder"] == nxt.holder


def test_a_release_writes_nothing_once_another_holder_has_the_lease(local_store):
    """Our last renewal landed unseen, then we hung past its expiry and another agent took
    the job over: the release must leave the new holder's lease as it is."""
    lease, clock = landed_unseen_renewal(local_store)
    clock.now = 2_000.0
    new = Lease(local_store, JOB, ttl=60, clock=clock)
    new.acquire()
    before = record(local_store)
    lease.release()
    assert record(local_store) == before and before["holder"] == new.holder and not before["released"]
    new.renew()  # the new holder's etag still stands
    assert record(local_store)["holder"] == new.holder


def test_an_acquire_whose_response_was_lost_holds_the_lease(any_store):
    faulty = FaultyStore(any_store)
    faulty.inject("write", key=KEY, when="after", error=PreconditionFailed("412: our own write, retried"))
    lease = Lease(faulty, JOB, clock=Clock())
    lease.acquire()  # today: "just taken by another agent", by itself
    assert record(any_store)["holder"] == lease.holder and lease.generation == 1


def test_a_taken_over_lease_is_lost_for_good(local_store):
    clock = Clock()
    old = Lease(local_store, JOB, ttl=10, clock=clock)
    old.acquire()
    clock.now = 2_000.0  # old hung past its expiry
    new = Lease(local_store, JOB, ttl=10, clock=clock)
    new.acquire()
    with pytest.raises(LeaseLost, match=new.holder):
        old.renew()
    assert old.lost
    with pytest.raises(LeaseLost):  # no more writes: it stays lost
        old.fence()
    old.release()
    assert record(local_store)["holder"] == new.holder and not record(local_store)["released"]


def test_every_new_holder_gets_the_next_generation(local_store):
    clock = Clock()
    first = Lease(local_store, JOB, ttl=10, clock=clock)
    first.acquire()
    first.acquire()  # the same holder again: the same generation
    assert first.generation == 1 and first.fence() == 1
    first.release()
    second = Lease(local_store, JOB, ttl=10, clock=clock)
    second.acquire()
    clock.now = 2_000.0
    third = Lease(local_store, JOB, ttl=10, clock=clock)
    third.acquire()
    assert (second.generation, third.generation) == (2, 3)
    assert record(local_store)["generation"] == 3


def test_a_lease_written_by_an_older_runctl_is_generation_0(local_store):
    old = dict(holder="old", host="elsewhere", pid=1, expires=0.0, released=False)
    local_store.write(KEY, json.dumps(old).encode())
    lease = Lease(local_store, JOB, clock=Clock())
    lease.acquire()
    assert lease.generation == 1


def test_a_lease_file_that_is_not_a_lease_is_a_clear_error(local_store):
    local_store.write(KEY, b"[1, 2]")
    with pytest.raises(StoreError, match="lease of job job-1.*lease.json.*not a lease"):
        Lease(local_store, JOB, clock=Clock()).acquire()



def test_an_agent_that_cannot_renew_stops_at_half_its_ttl_and_kills_at_a_quarter():
    assert must_stop_at(held_until=1_060.0, ttl=60.0) == 1_030.0
    assert must_kill_at(held_until=1_060.0, ttl=60.0) == 1_045.0


def test_a_heartbeat_too_slow_for_the_lease_is_refused(local_store, tmp_path):
    spec = JobSpec("job-1", ("true",), local_store.url, str(tmp_path / "ck"), str(tmp_path))
    with pytest.raises(UsageError, match="heartbeat interval \\(20s\\).*quarter of the lease TTL \\(60s\\)"):
        Agent(spec, local_store, [], AgentOptions(run_dir=tmp_path / "run", heartbeat_interval=20.0))


def test_a_lease_rises_above_the_generation_of_the_snapshots(local_store):
    lease = Lease(local_store, JOB, clock=Clock())
    lease.acquire()  # lease.json was gone: generation 1
    lease.rise_above(6)
    assert lease.generation == 7 and record(local_store)["generation"] == 7
    lease.rise_above(3)  # already above: nothing written
    assert lease.generation == 7 and lease.fence() == 7
