from __future__ import annotations

import pytest

from runctl.errors import UsageError
from runctl.store.retention import RetentionPlan, plan_retention, seq_of


def names(*seqs: int) -> list[str]:
    return [f"{s:08d}" for s in seqs]


def test_seq_of():
    assert seq_of("00000003") == 3
    assert seq_of("7") == 7
    for bad in ["", "latest", "-1", "3a", " 3", "1" * 13, "١"]:  # the last is an Arabic-Indic digit
        assert seq_of(bad) is None


def test_keeps_newest_complete_and_deletes_older():
    plan = plan_retention(names(1, 2, 3, 4, 5), names(1, 2, 3, 4, 5), keep_last_n=2)
    assert plan == RetentionPlan(keep=tuple(names(5, 4)), delete=tuple(names(1, 2, 3)), in_progress=())


def test_incomplete_older_than_newest_complete_go_newer_stay():
    plan = plan_retention(names(1, 2, 3, 4, 5, 6), complete=names(1, 3, 5), keep_last_n=2)
    assert plan.keep == tuple(names(5, 3))
    assert plan.delete == tuple(names(1, 2, 4))
    assert plan.in_progress == tuple(names(6))


def test_keep_more_than_there_are():
    plan = plan_retention(names(1, 2, 3), names(2, 3), keep_last_n=10)
    assert plan.keep == tuple(names(3, 2))
    assert plan.delete == tuple(names(1))  # incomplete and older than the newest complete


def test_nothing_complete_deletes_nothing():
    plan = plan_retention(names(1, 2, 3), complete=[], keep_last_n=1)
    assert plan.delete == () and plan.keep == ()
    assert plan.in_progress == tuple(names(1, 2, 3))


def test_non_seq_folders_are_never_touched():
    plan = plan_retention(["latest", "tmp", "00000001", "00000002", "notes.d"], ["00000001", "00000002"], 1)
    assert plan.delete == ("00000001",)
    assert "latest" not in plan.delete + plan.keep + plan.in_progress


def test_unpadded_names_sort_numerically():
    plan = plan_retention(["9", "10", "11"], ["9", "10", "11"], keep_last_n=1)
    assert plan.keep == ("11",) and plan.delete == ("9", "10")


def test_complete_names_need_not_be_listed_as_folders():
    assert plan_retention([], ["1", "2"], 1).delete == ("1",)


def test_empty():
    assert plan_retention([], [], 3) == RetentionPlan((), (), ())


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_keep_last_n_must_be_positive(bad):
    with pytest.raises(UsageError):
        plan_retention(names(1), names(1), bad)
