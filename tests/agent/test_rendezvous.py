"""runctl.agent.rendezvous: one host of the job's c10d rendezvous, agreed through the store
(a folder and S3): created create-only, replaced on condition when its machine is gone,
every agent reading the same record; an ambiguous write decided by its token."""

from __future__ import annotations

import json

import pytest

from runctl.agent.membership import Membership
from runctl.agent.rendezvous import Rendezvous, agree_on_host, read_rendezvous
from runctl.errors import PreconditionFailed, StoreError
from runctl.store import layout
from runctl.testing.faulty_store import FaultyStore
from clocks import Clock
from racing import ReadTogether, in_threads

JOB = "job-1"
TTL = 60.0
PORT = 29400
KEY = layout.rendezvous_key(JOB)


def node(store, clock, name: str):
    """Register machine ``name`` (address 10.0.0.<last char>) now; its NodeRecord."""
    return Membership(store, JOB, name, f"10.0.0.{name[-1]}", clock=clock).register(epoch=0)


def agree(store, clock, me, port: int = PORT) -> Rendezvous:
    return agree_on_host(store, JOB, me, port, now=clock.now, ttl=TTL)


def test_the_first_machine_becomes_host_and_the_others_read_it(any_store):
    clock = Clock()
    a, b = node(any_store, clock, "i-1"), node(any_store, clock, "i-2")
    first = agree(any_store, clock, a)
    assert first.is_host and first.endpoint == f"10.0.0.1:{PORT}" and first.record.epoch == 1
    second = agree(any_store, clock, b, port=1234)  # its port is not used: it is no host
    assert not second.is_host and second.record == first.record
    assert agree(any_store, clock, a) == first  # asked again: the same answer, nothing written
    assert read_rendezvous(any_store, JOB)[0] == first.record


def test_of_machines_racing_to_create_it_exactly_one_wins(any_store):
    clock = Clock()
    nodes = [node(any_store, clock, f"i-{n}") for n in range(1, 6)]
    racing = ReadTogether(any_store, KEY, len(nodes))
    answers = in_threads([lambda me=me: agree(racing, clock, me) for me in nodes])
    assert sum(a.is_host for a in answers) == 1
    (record,) = {a.record for a in answers}  # every machine read the same record
    assert record == read_rendezvous(any_store, JOB)[0] and record.epoch == 1
    (host,) = [me for me, a in zip(nodes, answers) if a.is_host]
    assert record.instance_id == host.instance_id and record.address == host.address


def test_a_host_gone_stale_is_replaced_by_a_live_machine_at_the_next_epoch(any_store):
    clock = Clock()
    a, b, c = (node(any_store, clock, name) for name in ("i-1", "i-2", "i-3"))
    assert agree(any_store, clock, a).is_host
    clock.now += TTL - 1
    b, c = node(any_store, clock, "i-2"), node(any_store, clock, "i-3")  # a stops renewing
    assert agree(any_store, clock, b).record.instance_id == "i-1"  # not stale yet: kept
    clock.now += 1
    replaced = agree(any_store, clock, b)
    assert replaced.is_host and replaced.record.instance_id == "i-2" and replaced.record.epoch == 2
    assert agree(any_store, clock, c) == Rendezvous(replaced.record, False)
    a = node(any_store, clock, "i-1")  # the old host comes back: it is no host any more
    assert agree(any_store, clock, a) == Rendezvous(replaced.record, False)


def test_a_host_that_left_is_replaced_at_once(local_store):
    clock = Clock()
    membership = Membership(local_store, JOB, "i-1", "10.0.0.1", clock=clock)
    assert agree(local_store, clock, membership.register(epoch=0)).is_host
    b = node(local_store, clock, "i-2")
    membership.leave()
    replaced = agree(local_store, clock, b)
    assert replaced.is_host and replaced.record.epoch == 2


def test_of_two_machines_racing_to_replace_the_host_one_wins_and_both_agree(any_store):
    clock = Clock()
    assert agree(any_store, clock, node(any_store, clock, "i-1")).is_host
    clock.now += TTL
    b, c = node(any_store, clock, "i-2"), node(any_store, clock, "i-3")
    racing = ReadTogether(any_store, KEY, 2)  # both read the stale host, both write on its etag
    answers = in_threads([lambda: agree(racing, clock, b), lambda: agree(racing, clock, c)])
    assert sorted(a.is_host for a in answers) == [False, True]
    (record,) = {a.record for a in answers}
    assert record.epoch == 2 and record.instance_id in ("i-2", "i-3")
    assert record == read_rendezvous(any_store, JOB)[0]


@pytest.mark.parametrize("error", [StoreError("connection reset (injected)"), PreconditionFailed("412 (injected)")],
                         ids=["lost-answer", "retry-met-own-write"])
def test_an_ambiguous_create_that_landed_makes_this_machine_host(any_store, error):
    clock = Clock()
    faulty = FaultyStore(any_store)
    me = node(any_store, clock, "i-1")
    faulty.inject("write", key=KEY, when="after", error=error)
    answer = agree(faulty, clock, me)
    assert answer.is_host and answer.record.epoch == 1
    assert answer.record == read_rendezvous(any_store, JOB)[0]
    # Decided by the one read-back, not by another round of reading (the first read, of
    # nothing, raised NotFoundError, which FaultyStore does not record).
    assert [c for c in faulty.calls if c[1] == KEY] == [("write", KEY, "failed after"), ("read", KEY, "ok")]


def test_an_ambiguous_replacement_that_landed_makes_this_machine_host(any_store):
    clock = Clock()
    agree(any_store, clock, node(any_store, clock, "i-1"))
    clock.now += TTL
    faulty = FaultyStore(any_store)
    me = node(any_store, clock, "i-2")
    faulty.inject("write", key=KEY, when="after")
    answer = agree(faulty, clock, me)
    assert answer.is_host and answer.record.epoch == 2
    assert answer.record == read_rendezvous(any_store, JOB)[0]


def test_a_write_that_never_landed_is_an_error_not_a_win(local_store):
    clock = Clock()
    faulty = FaultyStore(local_store)
    me = node(local_store, clock, "i-1")
    faulty.inject("write", key=KEY, when="before")
    with pytest.raises(StoreError, match="connection reset"):
        agree(faulty, clock, me)
    assert read_rendezvous(local_store, JOB) is None
    # The same for a replacement: the stale host's record is left as it was.
    agree(local_store, clock, me)
    clock.now += TTL
    other = node(local_store, clock, "i-2")
    faulty.inject("write", key=KEY, when="before")
    with pytest.raises(StoreError, match="connection reset"):
        agree(faulty, clock, other)
    assert read_rendezvous(local_store, JOB)[0].instance_id == "i-1"


def test_a_write_whose_read_back_fails_too_stays_unknown(local_store):
    clock = Clock()
    faulty = FaultyStore(local_store)
    me = node(local_store, clock, "i-1")

    def write_then_lose_the_reads(key, data, **condition):
        faulty.inject("read", key=KEY, when="before", error=StoreError("read timed out (injected)"))
        local_store.write(key, data, **condition)
        raise StoreError("connection reset (injected)")

    faulty.write = write_then_lose_the_reads
    with pytest.raises(StoreError, match="read timed out"):
        agree(faulty, clock, me)
    assert read_rendezvous(local_store, JOB)[0].instance_id == "i-1"  # it landed; this agent cannot know


def test_a_record_that_is_not_one_is_an_error_naming_it(local_store):
    local_store.write(KEY, json.dumps({"instance_id": "i-1", "epoch": "one"}).encode())
    with pytest.raises(StoreError, match=r"rendezvous of job job-1 \(jobs/job-1/rendezvous.json\) is not a rend"):
        read_rendezvous(local_store, JOB)


def test_the_host_moves_the_epoch_on_condition_and_a_later_machine_reads_the_new_one(any_store):
    from runctl.agent.rendezvous import advance_epoch

    clock = Clock()
    a, b = node(any_store, clock, "i-1"), node(any_store, clock, "i-2")
    held = agree(any_store, clock, a).record
    moved = advance_epoch(any_store, JOB, held, 4321)
    assert (moved.instance_id, moved.epoch, moved.port) == ("i-1", 2, 4321) and moved.token != held.token
    later = agree(any_store, clock, b)
    assert not later.is_host and later.record == moved == read_rendezvous(any_store, JOB)[0]
    with pytest.raises(StoreError, match="no longer the one i-1 hosts"):
        advance_epoch(any_store, JOB, held, 4321)  # a stale record moves nothing
    assert read_rendezvous(any_store, JOB)[0] == moved
