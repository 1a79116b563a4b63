"""A job of two machines on AWS, in the fake cloud, through the real CLI:

    runctl aws run training/train_ddp.py --nodes 2 -- ...

The job's group holds two instances; their agents register, agree on the rendezvous host,
and each starts torchrun (one process per machine, gloo over loopback) once both are live.
The host's agent makes sharded snapshots (every machine posts its part of each round) and
records the job; the job ends with the weights of an uninterrupted two-process run.
"""

from __future__ import annotations

import json

import pytest

from runctl.agent.rendezvous import read_rendezvous
from runctl.agent.status import read_status
from runctl.store import layout
from runctl.store.rounds import rounds_prefix, seq_name
from runctl.store.sharded import ShardedRounds
from runctl.store.snapshots import Snapshots

from .test_auto_resume import final_result, job_store
from .two_nodes import (TIME_LIMIT, assert_every_snapshot_has_both_ranks,
                        ends_with_the_weights_of_a_two_process_run, submit)

pytest.importorskip("torch")
pytestmark = TIME_LIMIT


@pytest.mark.fake_cloud(image_packages=("torch", "numpy"), agent_python=None)
def test_a_two_node_job_ends_with_the_weights_of_a_two_process_run_and_every_snapshot_has_both_ranks(
        cloud, runctl, runctl_bg, project, tmp_path):
    result = ends_with_the_weights_of_a_two_process_run(submit(runctl_bg, project, "--on-demand"), tmp_path)

    store = job_store(cloud)
    spec = json.loads(store.read(layout.job_key("wide")).data)
    assert (spec["nodes"], spec["nproc_per_node"]) == (2, "1")
    attempts = read_status(store, "wide").attempts
    assert [(a.reason, a.exit_code) for a in attempts] == [("completed", 0)], attempts
    assert len(cloud.instances) == 2  # the group's two machines, and no more
    addresses = {i.imds.private_ip for i in cloud.instances.values()}
    assert len(addresses) == 2 and "127.0.0.1" not in addresses  # each machine has its own
    host, _ = read_rendezvous(store, "wide")
    assert host.instance_id in cloud.instances and host.address == cloud.instances[host.instance_id].imds.private_ip
    assert list(store.list(layout.nodes_prefix("wide"))) == []  # both left
    # The other machine's output, apart from the host's (the job's).
    (member,) = [i for i in cloud.instances if i != host.instance_id]
    shown = runctl("logs", "wide", "--node", member)
    assert shown.returncode == 0, shown.stderr
    assert "on 2 ranks" in shown.stdout and final_result(shown.stdout) == result
    assert f"the job's other machines: --node {member}" in runctl("logs", "wide").stderr

    kept = assert_every_snapshot_has_both_ranks(store)
    assert kept[-1].metadata["newest"] == f"step-{result['final_step']:06d}"
    assert kept[-1].metadata.get("step") == result["final_step"]
    parts = ShardedRounds(Snapshots(store, layout.checkpoints_prefix("wide"))).parts(kept[-1].seq)
    assert sorted(p.instance for p in parts) == sorted(cloud.instances)  # one part from each machine
    # The part records of the rounds before the latest snapshot went with the pruning.
    rounds = [name for name in store.list_dirs(rounds_prefix(layout.checkpoints_prefix("wide"))) if name.isdigit()]
    assert rounds == [seq_name(kept[-1].seq)], rounds
