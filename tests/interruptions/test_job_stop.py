"""runctl.interruptions.job_stop: one machine asks every machine of the job to stop, through
the store (a folder and S3). The first stop of an epoch stands; the source reports it once
per epoch; a stop of an earlier epoch stops nothing."""

from __future__ import annotations

import pytest

from runctl.errors import StoreError
from runctl.interruptions.job_stop import JobStopSource, StopRecord, job_stops, read_stop, request_stop
from runctl.store import layout
from runctl.testing.faulty_store import FaultyStore
from racing import ReadTogether, in_threads

JOB = "job-1"
KEY = layout.job_stop_key(JOB)


class Epoch:
    """The epoch the agent follows, moved by the test."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self) -> int:
        return self.value


def test_the_first_stop_of_an_epoch_stands(any_store):
    first = request_stop(any_store, JOB, 1, "spot notice on i-1", 1_120.0, requested=1_000.0)
    assert first == StopRecord(1, "spot notice on i-1", 1_120.0, 1_000.0)
    later = request_stop(any_store, JOB, 1, "spot notice on i-2", 1_300.0, requested=1_180.0)
    assert later == first
    assert read_stop(any_store, JOB)[0] == first


def test_of_machines_racing_to_stop_the_epoch_one_writes_and_all_read_it(any_store):
    racing = ReadTogether(any_store, KEY, 3)
    answers = in_threads([lambda n=n: request_stop(racing, JOB, 1, f"notice on i-{n}", None, requested=0.0) for n in range(3)])
    (stop,) = set(answers)
    assert stop == read_stop(any_store, JOB)[0]


def test_the_stop_of_a_new_epoch_replaces_an_old_one_and_never_the_reverse(any_store):
    request_stop(any_store, JOB, 1, "notice on i-1", 100.0, requested=0.0)
    second = request_stop(any_store, JOB, 2, "notice on i-2", 200.0, requested=0.0)
    assert second.epoch == 2 and read_stop(any_store, JOB)[0] == second
    # A machine still at epoch 1 asks late: its epoch is over; epoch 2's stop stays.
    assert request_stop(any_store, JOB, 1, "late notice", 150.0, requested=0.0) == second
    assert read_stop(any_store, JOB)[0] == second


def test_every_stop_is_listed_oldest_first_after_newer_epochs_replaced_it(any_store):
    assert job_stops(any_store, JOB) == []
    request_stop(any_store, JOB, 1, "notice on i-1", 100.0, requested=40.0)
    request_stop(any_store, JOB, 2, "notice on i-2", 200.0, requested=140.0)
    request_stop(any_store, JOB, 2, "notice on i-3", 210.0, requested=150.0)  # the epoch's first stands
    request_stop(any_store, JOB, 4, "notice on i-4", None, requested=None)
    assert job_stops(any_store, JOB) == [StopRecord(1, "notice on i-1", 100.0, 40.0),
                                         StopRecord(2, "notice on i-2", 200.0, 140.0),
                                         StopRecord(4, "notice on i-4", None, None)]
    assert read_stop(any_store, JOB)[0].epoch == 4  # what the agents read is the newest


def test_a_record_of_before_the_history_lists_its_one_stop(local_store):
    local_store.write(KEY, b'{"epoch": 1, "reason": "notice on i-1", "deadline": 5.0}')
    assert job_stops(local_store, JOB) == [StopRecord(1, "notice on i-1", 5.0)]
    assert request_stop(local_store, JOB, 2, "notice on i-2", 9.0, requested=7.0).earlier == (
        StopRecord(1, "notice on i-1", 5.0),)


def test_the_source_reports_the_stop_of_its_epoch_once(any_store):
    source = JobStopSource(any_store, JOB, Epoch(1), interval=5.0)
    source.attempt_started(0, 1_000.0)
    assert source.poll(1_000.0) is None  # nothing asked yet
    request_stop(any_store, JOB, 1, "spot notice on i-2", 1_120.0, requested=0.0)
    assert source.poll(1_004.0) is None  # not looked at again before the interval
    notice = source.poll(1_005.0)
    assert notice is not None and notice.restartable  # like a spot notice: the job resumes after
    assert (notice.source, notice.received, notice.deadline) == ("job-stop", 1_005.0, 1_120.0)
    assert notice.detail == "every machine of the job stops (epoch 1): spot notice on i-2"
    assert source.poll(1_010.0) is None and source.poll(1_100.0) is None  # reported once
    source.close()


def test_a_stop_of_an_older_epoch_does_not_stop_the_new_one(any_store):
    request_stop(any_store, JOB, 1, "notice on i-1", 100.0, requested=0.0)
    epoch = Epoch(2)
    source = JobStopSource(any_store, JOB, epoch, interval=1.0)
    assert source.poll(1_000.0) is None and source.poll(1_001.0) is None
    request_stop(any_store, JOB, 2, "notice on i-3", 1_100.0, requested=0.0)
    notice = source.poll(1_002.0)
    assert notice is not None and "(epoch 2): notice on i-3" in notice.detail
    epoch.value = 3  # the job restarted: epoch 2's stop is history
    assert source.poll(1_003.0) is None


def test_an_agent_behind_stops_at_a_later_epochs_stop(local_store):
    request_stop(local_store, JOB, 4, "notice on i-1", None, requested=0.0)
    notice = JobStopSource(local_store, JOB, Epoch(3)).poll(1_000.0)
    assert notice is not None and notice.deadline is None and "(epoch 4)" in notice.detail


def test_the_source_goes_on_after_the_store_failed(local_store):
    faulty = FaultyStore(local_store)
    request_stop(local_store, JOB, 1, "notice", 50.0, requested=0.0)
    source = JobStopSource(faulty, JOB, Epoch(1), interval=1.0)
    faulty.inject("read", key=KEY, when="before")
    assert source.poll(1_000.0) is None  # logged, not raised: the agent's loop goes on
    assert source.poll(1_001.0) is not None


@pytest.mark.parametrize("when", ["after", "before"])
def test_an_ambiguous_stop_request_is_decided_by_reading_it_back(any_store, when):
    faulty = FaultyStore(any_store)
    faulty.inject("write", key=KEY, when=when)
    if when == "after":  # it landed: the stop is requested
        assert request_stop(faulty, JOB, 1, "notice", 10.0, requested=0.0) == StopRecord(1, "notice", 10.0, 0.0)
    else:  # it never arrived: the caller must know (and try again)
        with pytest.raises(StoreError, match="connection reset"):
            request_stop(faulty, JOB, 1, "notice", 10.0, requested=0.0)
        assert read_stop(any_store, JOB) is None


@pytest.mark.parametrize("data", [b'{"epoch": "two", "reason": "x", "deadline": null}',
                                  b'{"epoch": 2, "reason": "x", "deadline": null, '
                                  b'"earlier": [{"epoch": "one", "reason": "y", "deadline": null}]}'])
def test_a_record_that_is_not_one_is_an_error_naming_it(local_store, data):
    local_store.write(KEY, data)
    with pytest.raises(StoreError, match=r"jobs/job-1/stop.json is not a stop record \(bad epoch\)"):
        read_stop(local_store, JOB)
