"""A job of two machines in the fake cloud, through the real CLI, with one machine lost
WITHOUT a spot notice once a snapshot of both machines exists (``cloud.lose``: every
process on it is SIGKILLed, the group launches a replacement):

    runctl aws run training/train_ddp.py --nodes 2 --auto-resume -- ...

The survivor's torchrun fails on its next collective; its agent does not judge it before
the lost machine's membership expires (its TTL shortened to 10 s here): then it asks
every machine to stop (stop.json of epoch 1 names the lost machine). No round is made
without the lost machine's ranks; the job resumes from the latest complete snapshot on the
survivor and the group's replacement, and ends with the weights of an uninterrupted
two-process run.

What the fake cloud cannot show: on loopback a vanished machine's connections are reset
at once, so the survivor's collectives fail fast; on AWS they may hang until the process
group's timeout, and the stop then comes from the membership TTL alone.
"""

from __future__ import annotations

import pytest

from runctl.agent.multinode import MEMBERSHIP_TTL_ENV
from runctl.agent.rendezvous import read_rendezvous
from runctl.agent.status import read_status
from runctl.interruptions.job_stop import read_stop
from runctl.store import layout

from .two_nodes import (TIME_LIMIT, assert_every_snapshot_has_both_ranks,
                        ends_with_the_weights_of_a_two_process_run, once_both_have_a_snapshot, submit)

pytest.importorskip("torch")
pytestmark = TIME_LIMIT


def _run_and_lose(cloud, runctl_bg, project, which: str):
    """Start the job, lose its host or the other machine (``which``) once a snapshot of both
    exists; the CLI's process, the store and the lost instance's id."""
    cloud.agent_environ[MEMBERSHIP_TTL_ENV] = "10"
    proc = submit(runctl_bg, project, "--auto-resume")
    store, host, member = once_both_have_a_snapshot(cloud, proc)
    lost = host if which == "host" else member
    cloud.lose(lost)
    return proc, store, lost


def assert_the_loss_was_stopped_and_left_nothing(cloud, store, lost: str) -> None:
    """The lost machine's peers asked the stop of epoch 1; three instances in all (the two
    machines and the lost one's replacement); every machine left (the lost one could not
    delete its record); every snapshot has both ranks' files."""
    stop = read_stop(store, "wide")[0]
    assert stop.epoch == 1 and stop.reason.startswith(f"{lost} lost without a notice"), stop
    assert len(cloud.instances) == 3
    assert [i.key.rsplit("/", 1)[-1] for i in store.list(layout.nodes_prefix("wide"))] in ([], [f"{lost}.json"])
    assert_every_snapshot_has_both_ranks(store)


@pytest.mark.fake_cloud(image_packages=("torch", "numpy"), agent_python=None)
def test_a_member_lost_without_a_notice_stops_both_and_the_job_resumes_to_the_weights_of_a_two_process_run(
        cloud, runctl_bg, project, tmp_path):
    proc, store, lost = _run_and_lose(cloud, runctl_bg, project, "member")
    ends_with_the_weights_of_a_two_process_run(proc, tmp_path)

    attempts = read_status(store, "wide").attempts
    assert [a.reason for a in attempts] == ["interrupted", "completed"], attempts
    assert attempts[0].interruption["source"] == "job-stop"
    # The failed torchrun was judged a stop, and no round was made without the lost ranks.
    assert attempts[1].resumed_from is not None
    rendezvous = read_rendezvous(store, "wide")[0]
    assert (rendezvous.instance_id, rendezvous.epoch) == (attempts[0].instance_id, 2)
    assert_the_loss_was_stopped_and_left_nothing(cloud, store, lost)
    # The cloud fixture asserts that no group, template or instance is left.


@pytest.mark.fake_cloud(image_packages=("torch", "numpy"), agent_python=None)
def test_a_host_lost_without_a_notice_is_replaced_by_a_survivor_and_the_job_resumes_to_the_same_weights(
        cloud, runctl_bg, project, tmp_path):
    proc, store, lost = _run_and_lose(cloud, runctl_bg, project, "host")
    ends_with_the_weights_of_a_two_process_run(proc, tmp_path)

    attempts = read_status(store, "wide").attempts
    # The lost host never recorded its attempt's end: the next host closed it as lost.
    assert [a.reason for a in attempts] == ["lost", "completed"], attempts
    assert attempts[0].instance_id == lost != attempts[1].instance_id
    assert attempts[1].resumed_from is not None
    rendezvous = read_rendezvous(store, "wide")[0]
    assert (rendezvous.instance_id, rendezvous.epoch) == (attempts[1].instance_id, 2)
    assert_the_loss_was_stopped_and_left_nothing(cloud, store, lost)
