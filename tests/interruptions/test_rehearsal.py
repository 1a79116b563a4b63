"""Preemption rehearsal: durations, the schedule of offsets, and the scheduled source."""

from __future__ import annotations

import random

import pytest

from runctl.errors import UsageError
from runctl.interruptions.rehearsal import (
    DEFAULT_WINDOW,
    RehearsalSchedule,
    parse_duration,
    parse_rehearse_at,
    plan_offsets,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20s", 20.0), ("20", 20.0), ("1.5m", 90.0), ("2h", 7200.0), ("250ms", 0.25), (" 3 s ", 3.0), ("0s", 0.0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "-1s", "1d", "1.2.3s", "abc", "1 2s", "1e3s"])
def test_parse_duration_rejects_with_a_usage_error(text):
    with pytest.raises(UsageError, match="invalid duration"):
        parse_duration(text)


def test_parse_rehearse_at():
    assert parse_rehearse_at("20s,45s") == [20.0, 45.0]
    assert parse_rehearse_at("1m, 500ms ,3") == [60.0, 0.5, 3.0]
    assert parse_rehearse_at("5s,") == [5.0]  # a trailing comma is forgiven
    with pytest.raises(UsageError):
        parse_rehearse_at("5s,soon")


def test_plan_offsets_uses_the_given_times():
    assert plan_offsets(2, [3.0, 4.5], random.Random(0)) == [3.0, 4.5]


def test_plan_offsets_wants_one_time_per_interruption():
    with pytest.raises(UsageError, match="one time per interruption"):
        plan_offsets(3, [1.0, 2.0], random.Random(0))


def test_plan_offsets_random_in_the_window_and_seeded():
    offsets = plan_offsets(50, None, random.Random(7))
    assert len(offsets) == 50
    assert all(DEFAULT_WINDOW[0] <= o <= DEFAULT_WINDOW[1] for o in offsets)
    assert offsets == plan_offsets(50, None, random.Random(7))
    assert plan_offsets(0, None, random.Random(7)) == []
    with pytest.raises(UsageError):
        plan_offsets(-1, None, random.Random(7))


def test_schedule_interrupts_attempt_k_at_its_offset():
    schedule = RehearsalSchedule([2.0, 5.0])
    assert schedule.planned == 2
    assert schedule.poll(1000.0) is None  # no attempt yet

    schedule.attempt_started(0, 100.0)
    assert schedule.poll(101.9) is None
    notice = schedule.poll(102.0)
    assert notice is not None and notice.source == "rehearsal" and notice.restartable
    assert notice.received == 102.0 and "1 of 2" in notice.detail
    assert schedule.poll(103.0) is None  # reported once
    assert schedule.injected == 1

    schedule.attempt_started(1, 200.0)  # measured from the new attempt's start
    assert schedule.poll(204.9) is None
    assert schedule.poll(205.0) is not None
    assert schedule.injected == 2

    schedule.attempt_started(2, 300.0)  # the attempts after the last run undisturbed
    assert schedule.poll(10_000.0) is None
    assert schedule.injected == 2


def test_an_attempt_that_ends_early_keeps_its_interruption_for_the_next():
    # Attempt 0 failed before its offset: interruption 1 is still pending and hits attempt 1.
    schedule = RehearsalSchedule([2.0])
    schedule.attempt_started(0, 0.0)
    assert schedule.poll(1.0) is None
    schedule.attempt_started(1, 10.0)
    assert schedule.poll(11.0) is None
    assert schedule.poll(12.0) is not None
