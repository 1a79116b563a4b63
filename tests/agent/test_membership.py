"""runctl.agent.membership: the machines of a job of several nodes, on a folder store and
on S3. A machine drops out when its record ages past the TTL (moved by the clock) or when
it leaves."""

from __future__ import annotations

import json
import logging

import pytest

from runctl.agent.membership import Membership, NodeRecord, live_nodes, node_records
from runctl.errors import UsageError
from runctl.store import layout
from clocks import Clock

JOB = "job-1"
TTL = 60.0


def test_registered_machines_are_listed_with_what_they_wrote(any_store):
    clock = Clock()
    Membership(any_store, JOB, "i-b", "10.0.0.2", clock=clock).register(epoch=3)
    Membership(any_store, JOB, "i-a", "10.0.0.1", clock=clock).register(epoch=2)
    assert live_nodes(any_store, JOB, clock.now, TTL) == [NodeRecord("i-a", "10.0.0.1", 1_000.0, 2),
                                                          NodeRecord("i-b", "10.0.0.2", 1_000.0, 3)]
    stored = json.loads(any_store.read(layout.node_key(JOB, "i-a")).data)
    assert stored == {"instance_id": "i-a", "address": "10.0.0.1", "heartbeat": 1_000.0, "epoch": 2,
                      "failed_epoch": None}
    assert live_nodes(any_store, "another-job", clock.now, TTL) == []


def test_a_machine_that_stops_renewing_drops_out_at_the_ttl(any_store):
    clock = Clock()
    renewing = Membership(any_store, JOB, "i-a", "10.0.0.1", clock=clock)
    silent = Membership(any_store, JOB, "i-b", "10.0.0.2", clock=clock)
    renewing.register(epoch=1)
    silent.register(epoch=1)
    clock.now += TTL - 1
    renewing.register(epoch=1)
    assert [n.instance_id for n in live_nodes(any_store, JOB, clock.now, TTL)] == ["i-a", "i-b"]
    clock.now += 1  # i-b's record is exactly a TTL old: gone
    assert [n.instance_id for n in live_nodes(any_store, JOB, clock.now, TTL)] == ["i-a"]
    assert any_store.exists(layout.node_key(JOB, "i-b"))  # gone by its age, its record still there
    assert [(n.instance_id, n.heartbeat) for n in node_records(any_store, JOB)] == [  # status shows it stale
        ("i-a", 1_000.0 + TTL - 1), ("i-b", 1_000.0)]
    silent.register(epoch=1)  # it comes back (its agent was paused): present again
    assert [n.instance_id for n in live_nodes(any_store, JOB, clock.now, TTL)] == ["i-a", "i-b"]


def test_a_machine_that_leaves_is_gone_at_once(any_store):
    clock = Clock()
    leaving = Membership(any_store, JOB, "i-a", "10.0.0.1", clock=clock)
    leaving.register(epoch=1)
    Membership(any_store, JOB, "i-b", "10.0.0.2", clock=clock).register(epoch=1)
    leaving.leave()
    assert [n.instance_id for n in live_nodes(any_store, JOB, clock.now, TTL)] == ["i-b"]
    assert not any_store.exists(layout.node_key(JOB, "i-a"))
    leaving.leave()  # twice: nothing left to delete, no error


def test_a_record_that_is_not_one_counts_as_gone(local_store, caplog):
    clock = Clock()
    Membership(local_store, JOB, "i-a", "10.0.0.1", clock=clock).register(epoch=1)
    local_store.write(layout.node_key(JOB, "i-bad"), b"{not json")
    local_store.write(layout.node_key(JOB, "i-odd"), json.dumps(
        {"instance_id": "i-odd", "address": "x", "heartbeat": "soon", "epoch": 1}).encode())
    local_store.write(layout.node_key(JOB, "i-odder"), json.dumps(
        {"instance_id": "i-odder", "address": "x", "heartbeat": 1_000.0, "epoch": 1, "failed_epoch": "1"}).encode())
    with caplog.at_level(logging.WARNING):
        assert [n.instance_id for n in live_nodes(local_store, JOB, clock.now, TTL)] == ["i-a"]
    assert "i-bad.json is not a membership record" in caplog.text
    assert "i-odd.json is not a membership record (bad heartbeat or epoch)" in caplog.text
    assert "i-odder.json is not a membership record (bad heartbeat or epoch)" in caplog.text


def test_a_torchrun_failure_is_carried_by_every_renewal_and_an_older_record_has_none(local_store):
    clock = Clock()
    member = Membership(local_store, JOB, "i-a", "10.0.0.1", clock=clock)
    member.failed_epoch = 2
    member.register(epoch=2)
    clock.now += 5
    member.register(epoch=2)
    local_store.write(layout.node_key(JOB, "i-b"), json.dumps(  # written by a runctl before failed_epoch
        {"instance_id": "i-b", "address": "10.0.0.2", "heartbeat": clock.now, "epoch": 2}).encode())
    assert [(n.instance_id, n.failed_epoch) for n in live_nodes(local_store, JOB, clock.now, TTL)] == [
        ("i-a", 2), ("i-b", None)]


@pytest.mark.parametrize("bad", ["", "../i-a", "i-a/b", "-i"])
def test_an_instance_id_that_cannot_be_a_key_is_refused(local_store, bad):
    with pytest.raises(UsageError, match="cannot name a machine of job job-1"):
        Membership(local_store, JOB, bad, "10.0.0.1", clock=Clock())
