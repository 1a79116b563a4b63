"""The one log follower (cli/_logs.py): each chunk once, in order, from the attempts asked for."""

from __future__ import annotations

import io

from runctl.agent.logs import LogFollower
from runctl.cli._output import Output
from runctl.store import layout


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
