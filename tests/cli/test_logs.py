"""The one log follower (cli/_logs.py): each chunk once, in order, from the attempts asked for."""

from __future__ import annotations

import io
import json

from runctl.agent.logs import LogFollower, LogShipper, nodes_with_logs
from runctl.cli._output import Output
from runctl.models import JobStatus
from runctl.store import layout
from runctl.store.local import LocalStore


def ship(store, attempt: int, chunk: int, text: str) -> None:
    store.write(f"{layout.logs_prefix('j', attempt)}{chunk:06d}.log", text.encode())


def test_each_new_chunk_once_in_order_from_first_attempt(local_store):
    ship(local_store, 0, 0, "old attempt\n")
    ship(local_store, 1, 0, "a1\n")
    sink = io.BytesIO()
    follow = LogFollower(local_store, "j", 1, sink)
    follow()
    ship(local_store, 1, 1, "b1\n")
    ship(local_store, 2, 0, "a2\n")
    follow()
    follow()
    assert sink.getvalue() == b"a1\nb1\na2\n"


def test_only_one_attempt(local_store):
    for attempt in (0, 1):
        ship(local_store, attempt, 0, f"attempt {attempt}\n")
    assert LogFollower(local_store, "j", attempt=0).new_chunks() == [(0, b"attempt 0\n")]


def test_the_job_output_leaves_stdout_to_the_json_report(capfdbinary):
    Output("json").job_output.write(b"script says hi\n")
    Output("text").job_output.write(b"script says hello\n")
    out, err = capfdbinary.readouterr()
    assert (out, err) == (b"script says hello\n", b"script says hi\n")


def test_the_other_machines_of_a_job_of_several_ship_their_output_apart(local_store, tmp_path):
    """The host's output is the job's; another machine's is read with ``node``, and neither
    listing sees the other's."""
    host_log, member_log = tmp_path / "host.log", tmp_path / "member.log"
    host_log.write_bytes(b"rank 0 says hi\n")
    member_log.write_bytes(b"rank 1 says hi\n")
    LogShipper(local_store, "j", 0, host_log).ship()
    shipper = LogShipper(local_store, "j", 0, member_log, node="i-0b")
    shipper.ship()
    member_log.write_bytes(b"rank 1 says hi\nTraceback: rank 1 failed\n")
    shipper.ship()
    assert LogFollower(local_store, "j").new_chunks() == [(0, b"rank 0 says hi\n")]
    assert LogFollower(local_store, "j", node="i-0b").new_chunks() == [(0, b"rank 1 says hi\n"),
                                                                      (0, b"Traceback: rank 1 failed\n")]
    assert nodes_with_logs(local_store, "j") == ["i-0b"]


def test_runctl_logs_node(runctl_cli, tmp_path):
    store = LocalStore(tmp_path / "store")
    store.write(layout.status_key("j"), json.dumps(JobStatus("j", "running").to_dict()).encode())
    for node, text in ((None, "rank 0\n"), ("i-0b", "rank 1\n"), ("i-0c", "rank 2\n")):
        path = tmp_path / f"{node}.log"
        path.write_text(text)
        LogShipper(store, "j", 0, path, node=node).ship()

    host = runctl_cli("logs", "j", "--store", tmp_path / "store")
    assert host.returncode == 0 and host.stdout == "rank 0\n", host.stderr
    assert "the job's other machines: --node i-0b, --node i-0c" in host.stderr
    member = runctl_cli("logs", "j", "--node", "i-0c", "--store", tmp_path / "store", "--output", "json")
    assert member.returncode == 0, member.stderr
    assert json.loads(member.stdout) == {"job_id": "j", "node": "i-0c", "attempts": {"0": "rank 2\n"}}
    unknown = runctl_cli("logs", "j", "--node", "i-0d", "--store", tmp_path / "store")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "no machine i-0d shipped output for job j; its other machines: i-0b, i-0c" in unknown.stderr


def test_a_machine_that_runs_two_epochs_under_one_attempt_number_ships_each_line_once(local_store, tmp_path):
    log = tmp_path / "attempt-1.log"
    log.write_bytes(b"epoch 1\n")
    first = LogShipper(local_store, "j", 1, log, node="i-0b")
    first.ship()
    with open(log, "ab") as f:
        f.write(b"stopped\n")
    first.ship()  # the first epoch's last
    again = LogShipper(local_store, "j", 1, log, node="i-0b")
    again.skip_shipped()
    with open(log, "ab") as f:
        f.write(b"epoch 2\n")
    again.ship()
    shown = b"".join(data for _, data in LogFollower(local_store, "j", node="i-0b").new_chunks())
    assert shown == b"epoch 1\nstopped\nepoch 2\n"
