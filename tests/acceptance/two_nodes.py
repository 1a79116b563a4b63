"""What the acceptance tests of a job of two machines share: the job (train_ddp.py under
``aws run --nodes 2`` in the fake cloud, job id "wide"), the moment both machines have a
snapshot, and the checks every one of them ends with."""

from __future__ import annotations

import shutil

import pytest

from runctl.agent.rendezvous import read_rendezvous
from runctl.store import layout
from runctl.store.snapshots import Snapshots
from waiting import wait_for

from .conftest import REPO
from .test_auto_resume import FAST_SYNC, final_result, job_store
from .test_torchrun_auto_resume import ARGS, straight_result

SCRIPT = REPO / "training" / "examples" / "train_ddp.py"
JOB = "wide"
#: A two-machine job's test: its own waits (the first snapshot, then the job's end) bound it,
#: not the suite's 300 s per test, which a loaded 2-core machine may pass (4 agents, 4 torches).
TIME_LIMIT = pytest.mark.timeout(900)


def submit(runctl_bg, project, *options: str):
    """``aws run`` of the job with ``options`` (market, --auto-resume); its process."""
    shutil.copy(SCRIPT, project / "training" / "train_ddp.py")
    return runctl_bg("aws", "run", "training/train_ddp.py", "-t", "t3.micro", "--nodes", "2", *options,
                     "--job-id", JOB, "--", *ARGS, "--slow", "0.01", **FAST_SYNC)


def once_both_have_a_snapshot(cloud, proc) -> tuple[object, str, str]:
    """Wait for the job's first snapshot (a round of both machines); the job's store, its
    rendezvous host and the other machine."""
    store = job_store(cloud)
    wait_for("a snapshot of both machines",
             lambda: Snapshots(store, layout.checkpoints_prefix(JOB)).latest(), proc, timeout=240)
    host = read_rendezvous(store, JOB)[0].instance_id
    (member,) = [i for i in cloud.instances if i != host]
    return store, host, member


def ends_with_the_weights_of_a_two_process_run(proc, tmp_path) -> dict:
    """The CLI's exit 0 and its final result, the same as a straight two-process run's."""
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    straight = tmp_path / "straight"
    straight.mkdir()
    result = final_result(out)
    assert result == straight_result(straight) and result["world_size"] == 2
    return result


def assert_every_snapshot_has_both_ranks(store) -> list:
    """Every snapshot's checkpoint to resume from has both ranks' files and the metadata;
    the snapshots."""
    kept = Snapshots(store, layout.checkpoints_prefix(JOB)).list()
    assert kept, "no snapshot"
    for info in kept:
        newest = info.metadata["newest"]
        files = {f.path for f in info.files if f.path.startswith(newest + "/")}
        assert {f"{newest}/.metadata", f"{newest}/__0_0.distcp", f"{newest}/__1_0.distcp"} <= files, (info.seq, files)
    return kept
