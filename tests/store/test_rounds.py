"""The decisions of sharded snapshot rounds (runctl.store.rounds): pure, no store."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from runctl.errors import IntegrityError
from runctl.models import FileEntry
from runctl.store.rounds import (
    ABANDONED,
    Clash,
    Part,
    Round,
    build_part,
    build_round,
    missing_parts,
    newest_by_entry,
    newest_common_entry,
    next_round_seq,
    parse_part,
    parse_round,
    part_key,
    round_key,
    union_of_parts,
)

PREFIX = "jobs/j/checkpoints/"
DEADLINE = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def entry(path: str, content: str = "a") -> FileEntry:
    return FileEntry(path, len(content), (content.encode().hex() * 64)[:64])


def part(instance: str, files=(), newest=None, seq: int = 3, **kw) -> Part:
    return Part(seq=seq, instance=instance, files=tuple(files), newest=newest or {}, **kw)


def test_keys_sit_beside_the_seq_folders_not_inside_one():
    assert round_key(PREFIX) == "jobs/j/checkpoints/rounds/round.json"
    assert part_key(PREFIX, 3, "i-0abc") == "jobs/j/checkpoints/rounds/00000003/i-0abc.json"


def test_a_round_is_complete_when_every_expected_machine_posted_for_its_seq():
    rnd = Round(seq=3, expected=("i-a", "i-b"), generation=1, deadline=DEADLINE)
    assert missing_parts(rnd, []) == ["i-a", "i-b"]
    assert missing_parts(rnd, [part("i-b")]) == ["i-a"]
    assert missing_parts(rnd, [part("i-a", seq=2), part("i-b")]) == ["i-a"]  # a part of another round
    assert missing_parts(rnd, [part("i-c"), part("i-a"), part("i-b")]) == []


@pytest.mark.parametrize(("seqs", "last", "expected"), [
    ([], None, 1),
    ([1, 2], None, 3),
    ([1, 2], 2, 3),
    ([1, 2], 3, 4),  # round 3 abandoned before any file came: its seq is not reused
    ([1, 7], 3, 8),
])
def test_next_round_seq_passes_every_folder_and_the_last_round(seqs, last, expected):
    rnd = None if last is None else Round(seq=last, expected=("i-a",), generation=1, deadline=DEADLINE,
                                          state=ABANDONED)
    assert next_round_seq(seqs, rnd) == expected


def test_newest_by_entry_is_per_top_level_entry():
    assert newest_by_entry([("step-1/__0_0.distcp", 5), ("step-1/.metadata", 9), ("latest.txt", 7)]) == {
        "step-1": 9, "latest.txt": 7}


def test_newest_is_the_newest_entry_every_machine_has():
    a = part("i-a", newest={"step-000100": 100, "step-000200": 200, "step-000300": 300})
    b = part("i-b", newest={"step-000100": 110, "step-000200": 190})
    assert newest_common_entry([a, b]) == "step-000200"  # step-000300 is only on i-a: half a checkpoint
    # The newest time of an entry on any machine counts.
    c = part("i-c", newest={"step-000100": 500, "step-000200": 190})
    assert newest_common_entry([a, c]) == "step-000100"
    assert newest_common_entry([a, part("i-d", newest={"other": 1})]) is None
    assert newest_common_entry([]) is None


def test_the_union_holds_every_parts_files_and_shared_ones_once():
    a = part("i-a", [entry("step/__0_0.distcp", "x"), entry("step/.metadata", "m"), entry("config.json", "c")])
    b = part("i-b", [entry("step/__1_0.distcp", "y"), entry("config.json", "c")], shared=("config.json",))
    assert [f.path for f in union_of_parts([a, b])] == [
        "config.json", "step/.metadata", "step/__0_0.distcp", "step/__1_0.distcp"]


def test_parts_that_list_one_path_with_two_contents_do_not_make_a_snapshot():
    a = part("i-a", [entry("config.json", "c")])
    b = part("i-b", [entry("config.json", "d")])
    with pytest.raises(IntegrityError, match="disagree on config.json"):
        union_of_parts([a, b])


def test_records_round_trip():
    rnd = Round(seq=4, expected=("i-a", "i-b"), generation=2, deadline=DEADLINE)
    assert parse_round(build_round(rnd), "r") == rnd
    p = part("i-b", [entry("a/b", "x"), entry("c", "y")], newest={"a": 1, "c": 2}, shared=("c",),
             clashes=(Clash("d", "1" * 64, "2" * 64),))
    assert parse_part(build_part(p), "p") == p


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "other/1"}, "format"),
    ({"expected": []}, "instance ids"),
    ({"expected": ["../x"]}, "not an instance id"),
    ({"lease_generation": -1}, "not valid"),
    ({"state": "maybe"}, "not valid"),
    ({"deadline": "soon"}, "not a time"),
])
def test_a_bad_round_record_is_refused(change, message):
    doc = json.loads(build_round(Round(seq=1, expected=("i-a",), generation=1, deadline=DEADLINE)))
    with pytest.raises(IntegrityError, match=message):
        parse_round(json.dumps({**doc, **change}).encode(), "r")


@pytest.mark.parametrize(("change", "message"), [
    ({"instance": "a/b"}, "not valid"),
    ({"files": [{"path": "../x", "size": 1, "sha256": "a" * 64}]}, "contains '\\.' or"),
    ({"files": [{"path": "x", "size": -1, "sha256": "a" * 64}]}, "not valid"),
    ({"shared": ["nowhere"]}, "shared path"),
    ({"clashes": [{"path": "x", "sha256": "no", "stored_sha256": "a" * 64}]}, "clash"),
    ({"newest": {"a/b": 1}}, "newest"),
])
def test_a_bad_part_record_is_refused(change, message):
    doc = json.loads(build_part(part("i-a", [entry("x")], newest={"x": 1})))
    with pytest.raises(IntegrityError, match=message):
        parse_part(json.dumps({**doc, **change}).encode(), "p")
