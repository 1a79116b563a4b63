"""Ec2MetadataSource against the IMDS emulator, over real HTTP."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from runctl.errors import UsageError
from runctl.interruptions.ec2 import (
    DEFAULT_ENDPOINT,
    DEFAULT_ENDPOINT_IPV6,
    Ec2MetadataSource,
    MetadataHealth,
    detect_ec2_spot,
    parse_imds_time,
    resolve_endpoint,
)
from runctl.testing.imds import INSTANCE_ACTION_PATH, TOKEN_PATH, ImdsEmulator, format_time

from clocks import Clock
from waiting import wait_for

LOGGER = "runctl.interruptions.ec2"
NOW = 1_795_000_000.0


class Gate:
    """An injectable sleep that blocks the watching thread until the test lets it go on."""

    def __init__(self) -> None:
        self._semaphore = threading.Semaphore(0)
        self.delays: list[float] = []
        self.open = False

    def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        if not self.open:
            self._semaphore.acquire(timeout=5)

    def step(self) -> None:
        self._semaphore.release()

    def release_all(self) -> None:
        self.open = True
        self._semaphore.release()


#: How these tests wait (``wait_for(what, predicate, **QUICK)``): the sources poll every few
#: milliseconds, so look often and give up soon.
QUICK = {"timeout": 3.0, "interval": 0.01}


def next_notice(source: Ec2MetadataSource, timeout: float = 3.0):
    return wait_for("a notice from poll()", lambda: source.poll(time.time()), timeout=timeout, interval=0.01)


@pytest.fixture
def make_source():
    sources: list[Ec2MetadataSource] = []

    def make(endpoint: str, **options) -> Ec2MetadataSource:
        options.setdefault("interval", 0.05)
        options.setdefault("backoff_initial", 0.02)
        options.setdefault("backoff_max", 0.1)
        source = Ec2MetadataSource(endpoint, **options)
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.close()


# -- notices -------------------------------------------------------------------------------------
def test_a_notice_reaches_poll_within_two_seconds_at_the_default_interval(imds):
    source = Ec2MetadataSource(imds.endpoint)  # interval 1 s, as the agent uses it
    try:
        source.attempt_started(0, time.time())
        assert source.poll(time.time()) is None
        scheduled = imds.schedule_notice(in_seconds=0.3, deadline_in=120)
        notice = next_notice(source, timeout=3)
        latency = time.time() - scheduled.visible_at
    finally:
        source.close()
    assert latency < 2.0
    assert notice.source == "spot" and notice.action == "terminate"
    assert notice.deadline == float(int(scheduled.deadline_epoch))  # the time field, to the second
    assert notice.detail == f"spot instance-action terminate at {format_time(scheduled.deadline_epoch)}"
    assert scheduled.visible_at <= notice.received <= time.time()
    assert notice.restartable


def test_each_distinct_notice_is_reported_once(imds, make_source):
    source = make_source(imds.endpoint)
    imds.schedule_notice(deadline_in=60)
    first = next_notice(source)
    served = imds.count(INSTANCE_ACTION_PATH, status=200)
    wait_for("more rounds", lambda: imds.count(INSTANCE_ACTION_PATH, status=200) >= served + 5, **QUICK)
    assert source.poll(time.time()) is None  # the same notice, served again and again, is not news
    imds.schedule_notice(action="stop", deadline_in=30)  # a different notice is
    second = next_notice(source)
    assert (first.action, second.action) == ("terminate", "stop")
    assert second.deadline != first.deadline
    assert [n.action for n in source.notices] == ["terminate", "stop"]
    time.sleep(0.2)
    assert source.poll(time.time()) is None


def test_a_rebalance_recommendation_is_reported_as_rebalance(imds, make_source):
    source = make_source(imds.endpoint)
    rebalance = imds.send_rebalance()
    notice = next_notice(source)
    assert (notice.source, notice.action, notice.deadline) == ("rebalance", "rebalance", None)
    assert rebalance.notice_time in notice.detail
    imds.schedule_notice(deadline_in=90)  # the interruption that may follow is still reported
    assert next_notice(source).source == "spot"
    assert source.poll(time.time()) is None


def test_a_spot_notice_is_handed_over_before_a_rebalance_found_with_it(imds, make_source):
    imds.send_rebalance()
    imds.schedule_notice()
    source = make_source(imds.endpoint)
    source.start()
    wait_for("both notices", lambda: len(source.notices) == 2, **QUICK)
    assert [source.poll(time.time()).source for _ in range(2)] == ["spot", "rebalance"]


# -- tokens -------------------------------------------------------------------------------------
def test_a_short_lived_token_is_renewed_before_it_expires():
    clock, gate = Clock(NOW), Gate()
    with ImdsEmulator(clock=clock) as emulator:
        source = Ec2MetadataSource(emulator.endpoint, token_ttl=2, clock=clock, sleep=gate.sleep)
        source.start()
        try:
            wait_for("the first round", lambda: source.health.checks == 1, **QUICK)
            for round_number in range(2, 10):  # 4 emulated seconds, half a second a round
                clock.advance(0.5)
                gate.step()
                wait_for(f"round {round_number}", lambda: source.health.checks == round_number, **QUICK)
            emulator.schedule_notice(deadline_in=10)
            clock.advance(0.5)
            gate.step()
            notice = next_notice(source)
            wait_for("round 10", lambda: source.health.checks == 10, **QUICK)
            health = source.health
        finally:
            gate.release_all()
            source.close()
    assert notice.action == "terminate"
    assert emulator.count(TOKEN_PATH, method="PUT", status=200) >= 3  # at 0 s, 2 s and 4 s
    assert emulator.count(status=401) == 0  # renewed before the emulator expired them
    assert health.reachable and health.consecutive_errors == 0


def test_a_token_expired_on_the_server_side_is_replaced_after_401(make_source):
    clock = Clock(NOW)
    with ImdsEmulator(clock=clock) as emulator:
        source = make_source(emulator.endpoint)  # the source's own clock: it cannot know
        source.start()
        wait_for("rounds", lambda: emulator.count(INSTANCE_ACTION_PATH, status=404) >= 2, **QUICK)
        clock.advance(21_600)  # the emulator's token TTL is over
        wait_for("a 401", lambda: emulator.count(status=401) >= 1, **QUICK)  # on either path
        emulator.schedule_notice()
        assert next_notice(source).source == "spot"
    assert emulator.count(TOKEN_PATH, method="PUT", status=200) >= 2
    assert source.client.unauthorized >= 1


def test_expire_tokens_makes_the_source_take_a_new_token_and_go_on(imds, make_source):
    source = make_source(imds.endpoint)
    source.start()
    wait_for("reachable", lambda: source.health.reachable, **QUICK)
    assert imds.count(TOKEN_PATH, method="PUT") == 1
    imds.expire_tokens()
    wait_for("a second token", lambda: imds.count(TOKEN_PATH, method="PUT") == 2, **QUICK)
    imds.schedule_notice()
    assert next_notice(source).source == "spot"
    assert imds.count(status=401) >= 1
    wait_for("the round's end", lambda: source.health.checks >= 3 and source.health.reachable, **QUICK)
    assert source.health.consecutive_errors == 0  # a 401 retried at once is no error


def test_without_imdsv2_the_source_falls_back_to_imdsv1(make_source):
    with ImdsEmulator(tokens_required=False) as emulator:
        emulator.fail_next(1000, status=404, path=TOKEN_PATH)  # a service without the token API
        source = make_source(emulator.endpoint)
        emulator.schedule_notice()
        assert next_notice(source).source == "spot"
        assert emulator.count(TOKEN_PATH) == 1  # asked once, then left alone for a while


# -- failures -------------------------------------------------------------------------------------
def test_an_outage_shows_in_health_and_a_notice_sent_during_it_comes_after(imds, make_source, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    source = make_source(imds.endpoint)
    source.start()
    wait_for("reachable", lambda: source.health.reachable, **QUICK)
    before = time.time()
    imds.refuse()
    wait_for("errors", lambda: source.health.consecutive_errors >= 3, **QUICK)
    health = source.health
    assert not health.reachable
    assert health.last_ok is not None and health.last_ok <= before + 0.2
    assert health.failing_since is not None and health.failing_since >= health.last_ok
    assert "connection refused" in health.last_error
    assert "unreachable since" in health.describe()
    imds.schedule_notice(deadline_in=100)
    time.sleep(0.2)
    assert source.poll(time.time()) is None
    imds.accept()
    notice = next_notice(source, timeout=2)
    assert notice.source == "spot"
    wait_for("reachable again", lambda: source.health.reachable, **QUICK)  # the round ends after the notice
    assert source.health.consecutive_errors == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("retrying with backoff" in m for m in messages)  # refused, or reset if a request was in flight
    assert any("answers again" in m for m in messages)


def test_http_errors_are_retried(imds, make_source):
    imds.fail_next(3, status=500)
    imds.schedule_notice()
    source = make_source(imds.endpoint)
    assert next_notice(source).source == "spot"
    assert imds.count(status=500) == 3


def test_malformed_json_is_retried_and_logged_and_a_later_notice_reported(imds, make_source, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    imds.malformed_next(3)
    source = make_source(imds.endpoint)
    source.start()
    wait_for("past the malformed answers", lambda: imds.count(INSTANCE_ACTION_PATH, status=404) >= 1, **QUICK)
    assert source.poll(time.time()) is None
    imds.schedule_notice(deadline_in=50)
    notice = next_notice(source)
    assert notice.action == "terminate"
    assert any("malformed answer" in r.getMessage() for r in caplog.records)
    wait_for("reachable", lambda: source.health.reachable, **QUICK)
    assert source._thread is not None and source._thread.is_alive()


def test_backoff_doubles_to_its_cap_and_a_long_outage_is_logged_once(imds, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    imds.refuse()
    delays: list[float] = []
    source = Ec2MetadataSource(imds.endpoint, sleep=lambda seconds: (delays.append(seconds), time.sleep(0.002)))
    try:
        source.start()
        wait_for("nine rounds", lambda: len(delays) >= 9, **QUICK)
    finally:
        source.close()
    assert delays[:9] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the others went to DEBUG: at most one warning a minute
    assert source.health.consecutive_errors >= 9


def test_a_slow_service_times_out_and_close_does_not_wait_for_it(imds, make_source):
    imds.delay(5)
    source = make_source(imds.endpoint, timeout=0.2)
    source.start()
    wait_for("a timeout", lambda: source.health.consecutive_errors >= 1, **QUICK)
    assert "timed out" in source.health.last_error
    wait_for("a request in flight", lambda: imds.count() >= 2, **QUICK)
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 0.5


def test_close_cuts_a_request_in_flight_short(imds):
    imds.delay(5)
    source = Ec2MetadataSource(imds.endpoint)  # timeout 2 s
    source.start()
    wait_for("a request in flight", lambda: imds.count() >= 1, **QUICK)
    time.sleep(0.05)
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 0.5
    assert not source._thread.is_alive()


# -- health, detection, configuration --------------------------------------------------------------
def test_health_before_the_first_round():
    source = Ec2MetadataSource("http://127.0.0.1:9")
    health = source.health
    assert health == MetadataHealth(reachable=False, last_ok=None, consecutive_errors=0, last_error=None)
    assert health.to_dict() == {"reachable": False, "last_ok": None, "consecutive_errors": 0, "last_error": None,
                                "failing_since": None, "checks": 0}
    assert health.describe() == "metadata service not checked yet"


def test_detect_ec2_spot(imds, monkeypatch):
    assert detect_ec2_spot(imds.endpoint) is True
    assert detect_ec2_spot() is True  # AWS_EC2_METADATA_SERVICE_ENDPOINT, set by the fixture
    with ImdsEmulator(lifecycle="on-demand") as on_demand:
        assert detect_ec2_spot(on_demand.endpoint) is False
    imds.refuse()
    assert detect_ec2_spot(imds.endpoint) is None
    imds.accept()
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert detect_ec2_spot(imds.endpoint) is None


def test_detect_ec2_spot_gives_up_quickly_on_a_silent_service(imds):
    imds.delay(3)
    started = time.monotonic()
    assert detect_ec2_spot(imds.endpoint, timeout=0.2) is None
    assert time.monotonic() - started < 1


def test_resolve_endpoint():
    assert resolve_endpoint(None, {}) == DEFAULT_ENDPOINT
    assert resolve_endpoint(None, {"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"}) == DEFAULT_ENDPOINT_IPV6
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1338/"}
    assert resolve_endpoint(None, env) == "http://127.0.0.1:1338"
    assert resolve_endpoint("http://10.0.0.1:80", env) == "http://10.0.0.1:80"


def test_the_endpoint_comes_from_the_environment(imds):
    source = Ec2MetadataSource()
    assert source.endpoint == imds.endpoint


@pytest.mark.parametrize("options", [{"token_ttl": 0}, {"token_ttl": 21601}, {"endpoint": "ftp://x"},
                                     {"endpoint": "http://:80"}, {"endpoint": "http://host:port"}])
def test_bad_configuration_is_a_usage_error(options):
    with pytest.raises(UsageError):
        Ec2MetadataSource(**options)


@pytest.mark.parametrize("text, expected", [
    ("2026-11-29T08:22:00Z", 1_795_940_520.0),
    ("2026-11-29T08:22:00.500Z", 1_795_940_520.5),
    ("2026-11-29T09:22:00+01:00", 1_795_940_520.0),
    ("2026-11-29T08:22:00", 1_795_940_520.0),
])
def test_parse_imds_time(text, expected):
    assert parse_imds_time(text) == expected


def test_a_notice_with_an_unreadable_time_is_reported_without_deadline(make_source):
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802
            self._answer(200, b"token")

        def do_GET(self):  # noqa: N802
            if self.path == INSTANCE_ACTION_PATH:
                self._answer(200, b'{"action": "hibernate", "time": "soon"}')
            else:
                self._answer(404, b"")

        def _answer(self, status, body):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = make_source(f"http://127.0.0.1:{server.server_address[1]}")
        notice = next_notice(source)
    finally:
        server.shutdown()
        server.server_close()
    assert (notice.action, notice.deadline) == ("hibernate", None)


# -- hostile answers: a warning at most once a minute, never a traceback, the watch goes on ----------
def rounds_done(source: Ec2MetadataSource, n: int) -> None:
    done = source.health.checks
    wait_for(f"{n} more rounds", lambda: source.health.checks >= done + n, timeout=10, interval=0.01)


def assert_no_traceback(caplog) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_a_token_with_cr_lf_is_never_sent_and_the_watch_goes_on(imds, make_source, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock(NOW)
    imds.serve_token(b"abc\r\nX-Injected: yes")
    source = make_source(imds.endpoint, clock=clock)
    source.start()
    rounds_done(source, 5)
    assert imds.count(INSTANCE_ACTION_PATH) == 0  # no request carried it
    assert "malformed token" in source.health.last_error
    assert_no_traceback(caplog)
    assert len(caplog.records) == 1  # the clock stands still: one warning in this minute
    clock.advance(61)
    rounds_done(source, 2)
    assert len(caplog.records) == 2
    imds.serve_token(None)
    imds.schedule_notice(deadline_in=50)
    assert next_notice(source).action == "terminate"


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b"[]",
    b'"terminate"',
    b'{"action": "terminate\\r\\nINFO forged log line", "time": "2026-11-29T08:22:00Z"}',
    b'{"action": ["terminate"], "time": "2026-11-29T08:22:00Z"}',
], ids=["nested lists", "nested objects", "a list", "a string", "cr-lf in action", "action not a string"])
def test_a_malformed_notice_is_a_warning_a_minute_and_the_watch_goes_on(body, imds, make_source, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock(NOW)
    imds.serve_raw(INSTANCE_ACTION_PATH, body)
    source = make_source(imds.endpoint, clock=clock)
    source.start()
    rounds_done(source, 5)
    assert source.poll(time.time()) is None
    assert "malformed" in source.health.last_error
    assert_no_traceback(caplog)
    assert len(caplog.records) == 1
    assert "\r" not in caplog.records[0].getMessage() and "\n" not in caplog.records[0].getMessage()
    clock.advance(61)
    rounds_done(source, 2)
    assert len(caplog.records) == 2
    imds.serve_raw(INSTANCE_ACTION_PATH, None)
    imds.schedule_notice(deadline_in=50)
    assert next_notice(source).action == "terminate"
    assert source._thread.is_alive()


@pytest.mark.parametrize("when", ['"soon\\r\\nINFO forged"', "null", '["2026-11-29T08:22:00Z"]', '{"a": 1}'],
                         ids=["cr-lf", "null", "a list", "an object"])
def test_a_notice_with_a_bad_time_is_acted_on_once_and_warned_about_once_a_minute(when, imds, make_source,
                                                                                    caplog):
    """Dropping it would lose the final checkpoint: the machine goes anyway. It is reported
    without a deadline (the configured grace applies), once."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock(NOW)
    imds.serve_raw(INSTANCE_ACTION_PATH, b'{"action": "terminate", "time": ' + when.encode() + b"}")
    source = make_source(imds.endpoint, clock=clock)
    notice = next_notice(source)
    assert (notice.action, notice.deadline) == ("terminate", None)
    assert "\n" not in notice.detail and "\r" not in notice.detail
    rounds_done(source, 5)
    assert source.poll(time.time()) is None  # reported once
    assert_no_traceback(caplog)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreadable time" in warnings[0]
    clock.advance(61)
    rounds_done(source, 2)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert source.health.reachable


def test_a_bug_in_a_round_logs_its_traceback_once_a_minute_and_the_watch_goes_on(imds, make_source, caplog,
                                                                                   monkeypatch):
    import runctl.interruptions.ec2 as ec2

    def broken(body, received):
        raise TypeError("a bug")

    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock(NOW)
    imds.send_rebalance()
    monkeypatch.setattr(ec2, "_parse_rebalance", broken)
    source = make_source(imds.endpoint, clock=clock)
    source.start()
    rounds_done(source, 5)
    assert len([r for r in caplog.records if r.exc_info]) == 1
    assert "internal error" in source.health.last_error
    clock.advance(61)
    rounds_done(source, 2)
    assert len([r for r in caplog.records if r.exc_info]) == 2
    imds.schedule_notice(deadline_in=50)
    assert next_notice(source).action == "terminate"  # instance-action is read before the bug
