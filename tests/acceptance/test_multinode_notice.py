"""A job of two machines on spot, in the fake cloud, through the real CLI, with one spot
notice once a snapshot of both machines exists:

    runctl aws run training/train_ddp.py --spot --nodes 2 --auto-resume -- ...

On the machine that is not the rendezvous host: its agent asks both machines to stop
(stop.json of epoch 1), stops its torchrun, posts its final part and leaves, and its
instance detaches from the group; the host stops its torchrun, commits the final round with
both parts, records the attempt interrupted and moves the rendezvous to epoch 2; the
group's replacement joins it, and both resume from the final snapshot.

On the host: its agent asks the stop, commits the final round, records the attempt and
leaves; the other machine posts its final part, and it or the group's replacement replaces
the host in the rendezvous (epoch 2), takes the lease and runs the job as the host.

Either way the job ends with the weights of an uninterrupted two-process run.
"""

from __future__ import annotations

import re

import pytest

from runctl.agent.rendezvous import read_rendezvous
from runctl.agent.status import read_status
from runctl.interruptions.job_stop import read_stop
from runctl.store import layout

from .two_nodes import (TIME_LIMIT, assert_every_snapshot_has_both_ranks,
                        ends_with_the_weights_of_a_two_process_run, once_both_have_a_snapshot, submit)

pytest.importorskip("torch")
pytestmark = TIME_LIMIT


@pytest.mark.fake_cloud(notice_deadline_s=30.0, image_packages=("torch", "numpy"), agent_python=None)
def test_a_notice_on_the_member_of_a_two_node_job_resumes_both_to_the_weights_of_a_two_process_run(
        cloud, runctl, runctl_bg, project, tmp_path):
    proc = submit(runctl_bg, project, "--spot", "--auto-resume")
    store, host, member = once_both_have_a_snapshot(cloud, proc)
    cloud.interrupt(member)
    ends_with_the_weights_of_a_two_process_run(proc, tmp_path)

    attempts = read_status(store, "wide").attempts
    assert [a.reason for a in attempts] == ["interrupted", "completed"], attempts
    assert attempts[0].interruption["source"] == "job-stop"
    assert attempts[1].resumed_from == attempts[0].final_snapshot is not None
    stop = read_stop(store, "wide")[0]
    assert (stop.epoch, stop.reason) == (1, f"spot notice on {member}")
    rendezvous = read_rendezvous(store, "wide")[0]
    assert (rendezvous.instance_id, rendezvous.epoch) == (host, 2)
    shown = runctl("status", "wide")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert f"  nodes: 2, rendezvous host {host} (epoch 2)" in lines, shown.stdout
    assert "  machines: none in the job now" in lines, shown.stdout
    assert any(re.fullmatch(rf"  stop of epoch 1 at \d{{4}}-\d\d-\d\d [\d:]+: spot notice on {member}", line)
               for line in lines), shown.stdout
    assert len(cloud.instances) == 3  # the two machines and the noticed one's replacement
    assert list(store.list(layout.nodes_prefix("wide"))) == []  # every machine left
    assert_every_snapshot_has_both_ranks(store)
    # The cloud fixture asserts that no group, template, instance or spot request is left.


@pytest.mark.fake_cloud(notice_deadline_s=30.0, image_packages=("torch", "numpy"), agent_python=None)
def test_a_notice_on_the_host_of_a_two_node_job_makes_the_other_machine_the_host_and_resumes_both(
        cloud, runctl_bg, project, tmp_path):
    proc = submit(runctl_bg, project, "--spot", "--auto-resume")
    store, host, member = once_both_have_a_snapshot(cloud, proc)
    cloud.interrupt(host)
    ends_with_the_weights_of_a_two_process_run(proc, tmp_path)

    # The new host is the other machine, or the group's replacement when it booted before the
    # stop: it joined epoch 1, stopped with it, and rejoined first.
    attempts = read_status(store, "wide").attempts
    assert [a.reason for a in attempts] == ["interrupted", "completed"], attempts
    assert attempts[0].instance_id == host != attempts[1].instance_id
    assert attempts[1].resumed_from == attempts[0].final_snapshot is not None
    stop = read_stop(store, "wide")[0]
    assert (stop.epoch, stop.reason) == (1, f"spot notice on {host}")
    rendezvous = read_rendezvous(store, "wide")[0]
    assert (rendezvous.instance_id, rendezvous.epoch) == (attempts[1].instance_id, 2)
    assert len(cloud.instances) == 3  # the two machines and the host's replacement
    assert list(store.list(layout.nodes_prefix("wide"))) == []
    assert_every_snapshot_has_both_ranks(store)
