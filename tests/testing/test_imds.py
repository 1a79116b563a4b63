"""The IMDS emulator over real HTTP: tokens, notices, faults, counters, the command line."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from runctl.testing.imds import (
    IDENTITY_PATH,
    INSTANCE_ACTION_PATH,
    REBALANCE_PATH,
    TERMINATION_TIME_PATH,
    TOKEN_HEADER,
    TOKEN_PATH,
    TTL_HEADER,
    ImdsEmulator,
    format_time,
)

from clocks import Clock

NOW = 1_795_000_000.0


def call(endpoint: str, method: str, path: str, headers: dict | None = None, timeout: float = 5.0):
    """(status, headers, body) of one request, over a fresh connection."""
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def token(endpoint: str, ttl: int = 60) -> str:
    status, _, body = call(endpoint, "PUT", TOKEN_PATH, {TTL_HEADER: str(ttl)})
    assert status == 200
    return body.decode()


def get(endpoint: str, path: str, tok: str | None = None):
    status, _, body = call(endpoint, "GET", path, {TOKEN_HEADER: tok} if tok else {})
    return status, body


@pytest.fixture
def clock():
    return Clock(NOW)


@pytest.fixture
def emulator(clock):
    with ImdsEmulator(clock=clock, instance_id="i-0abc", instance_type="g5.xlarge", region="eu-west-1") as emu:
        yield emu


# -- tokens ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ttl", ["0", "21601", "-5", "abc", ""])
def test_token_ttl_out_of_bounds_or_not_a_number_is_400(imds, ttl):
    status, _, _ = call(imds.endpoint, "PUT", TOKEN_PATH, {TTL_HEADER: ttl})
    assert status == 400


def test_token_without_ttl_header_is_400(imds):
    assert call(imds.endpoint, "PUT", TOKEN_PATH)[0] == 400


@pytest.mark.parametrize("ttl", [1, 21600])
def test_token_ttl_bounds_are_accepted_and_echoed(imds, ttl):
    status, headers, body = call(imds.endpoint, "PUT", TOKEN_PATH, {TTL_HEADER: str(ttl)})
    assert status == 200 and body
    assert headers[TTL_HEADER] == str(ttl)


def test_get_on_the_token_path_is_405(imds):
    assert get(imds.endpoint, TOKEN_PATH)[0] == 405


def test_tokens_required_mode_answers_401_without_a_token(imds):
    assert imds.tokens_required
    assert get(imds.endpoint, "/latest/meta-data/instance-id")[0] == 401
    assert get(imds.endpoint, "/latest/meta-data/instance-id", token(imds.endpoint)) == (200, b"i-0123456789abcdef0")


def test_an_unknown_token_is_401_even_when_tokens_are_optional():
    with ImdsEmulator(tokens_required=False) as emu:
        assert get(emu.endpoint, "/latest/meta-data/instance-id")[0] == 200  # IMDSv1
        assert get(emu.endpoint, "/latest/meta-data/instance-id", "not-a-token")[0] == 401


def test_a_token_expires_after_its_ttl_on_the_emulator_clock(emulator, clock):
    tok = token(emulator.endpoint, ttl=2)
    clock.advance(1.9)
    assert get(emulator.endpoint, "/latest/meta-data/instance-id", tok)[0] == 200
    clock.advance(0.1)
    assert get(emulator.endpoint, "/latest/meta-data/instance-id", tok)[0] == 401


def test_expire_tokens_forgets_every_token(emulator):
    tok = token(emulator.endpoint)
    emulator.expire_tokens()
    assert get(emulator.endpoint, "/latest/meta-data/instance-id", tok)[0] == 401
    assert get(emulator.endpoint, "/latest/meta-data/instance-id", token(emulator.endpoint))[0] == 200


# -- metadata ---------------------------------------------------------------------------------
def test_instance_metadata_and_identity_document(emulator):
    tok = token(emulator.endpoint)
    assert get(emulator.endpoint, "/latest/meta-data/instance-id", tok) == (200, b"i-0abc")
    assert get(emulator.endpoint, "/latest/meta-data/instance-type", tok) == (200, b"g5.xlarge")
    assert get(emulator.endpoint, "/latest/meta-data/placement/availability-zone", tok) == (200, b"eu-west-1a")
    assert get(emulator.endpoint, "/latest/meta-data/instance-life-cycle", tok) == (200, b"spot")
    status, body = get(emulator.endpoint, IDENTITY_PATH, tok)
    document = json.loads(body)
    assert status == 200
    assert {k: document[k] for k in ("instanceId", "instanceType", "region", "availabilityZone")} == {
        "instanceId": "i-0abc", "instanceType": "g5.xlarge", "region": "eu-west-1", "availabilityZone": "eu-west-1a"}
    assert get(emulator.endpoint, "/latest/meta-data/no-such-thing", tok)[0] == 404
    assert b"spot/" in get(emulator.endpoint, "/latest/meta-data/", tok)[1]


def test_on_demand_lifecycle():
    with ImdsEmulator(lifecycle="on-demand") as emu:
        assert get(emu.endpoint, "/latest/meta-data/instance-life-cycle", token(emu.endpoint)) == (200, b"on-demand")


def test_instance_action_is_404_until_the_notice_appears_then_fixed_json(emulator, clock):
    tok = token(emulator.endpoint)
    assert get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)[0] == 404
    assert get(emulator.endpoint, TERMINATION_TIME_PATH, tok)[0] == 404
    notice = emulator.schedule_notice(1.5, action="stop", deadline_in=30.7)
    assert notice.deadline_epoch == pytest.approx(clock.now + 1.5 + 30.7)
    assert emulator.deadline_epoch == notice.deadline_epoch
    clock.advance(1.4)
    assert get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)[0] == 404
    assert emulator.notice_first_served is None
    clock.advance(0.1)
    status, body = get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)
    assert status == 200
    assert emulator.notice_first_served == clock.now
    document = json.loads(body)
    assert document == {"action": "stop", "time": format_time(notice.deadline_epoch)}  # no extra field
    assert document["time"].endswith("Z") and len(document["time"]) == 20  # to the second, UTC
    clock.advance(10)
    assert json.loads(get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)[1]) == document  # the time stays fixed
    assert get(emulator.endpoint, TERMINATION_TIME_PATH, tok) == (200, document["time"].encode())


def test_format_time_truncates_to_the_second_in_utc():
    assert format_time(1_795_940_520.999) == "2026-11-29T08:22:00Z"


def test_rebalance_is_404_until_sent_then_notice_time(emulator, clock):
    tok = token(emulator.endpoint)
    assert get(emulator.endpoint, REBALANCE_PATH, tok)[0] == 404
    rebalance = emulator.send_rebalance(in_seconds=2)
    assert get(emulator.endpoint, REBALANCE_PATH, tok)[0] == 404
    clock.advance(2)
    status, body = get(emulator.endpoint, REBALANCE_PATH, tok)
    assert status == 200 and json.loads(body) == {"noticeTime": rebalance.notice_time}


def test_clear_withdraws_notice_and_rebalance(emulator):
    tok = token(emulator.endpoint)
    emulator.schedule_notice()
    emulator.send_rebalance()
    emulator.clear()
    assert get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)[0] == 404
    assert get(emulator.endpoint, REBALANCE_PATH, tok)[0] == 404


def test_schedule_notice_rejects_an_unknown_action(emulator):
    with pytest.raises(ValueError):
        emulator.schedule_notice(action="explode")


# -- faults -----------------------------------------------------------------------------------
def test_fail_next_answers_errors_then_recovers(emulator):
    tok = token(emulator.endpoint)
    emulator.fail_next(2, status=503)
    assert [get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)[0] for _ in range(3)] == [503, 503, 404]


def test_fail_next_for_one_path_only(emulator):
    tok = token(emulator.endpoint)
    emulator.fail_next(1, path="spot/instance-action")
    assert get(emulator.endpoint, "/latest/meta-data/instance-id", tok)[0] == 200
    assert get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)[0] == 500
    assert get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)[0] == 404


def test_malformed_next_serves_invalid_json_on_instance_action(emulator):
    tok = token(emulator.endpoint)
    emulator.schedule_notice()
    emulator.malformed_next(1)
    status, body = get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)
    assert json.loads(get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)[1])["action"] == "terminate"


def test_serve_raw_answers_exactly_the_body_given_until_cleared(emulator):
    tok = token(emulator.endpoint)
    hostile = b"[" * 100_000 + b"]" * 100_000
    emulator.serve_raw(INSTANCE_ACTION_PATH, hostile)
    assert get(emulator.endpoint, INSTANCE_ACTION_PATH, tok) == (200, hostile)
    assert get(emulator.endpoint, REBALANCE_PATH, tok)[0] == 404  # only that path
    emulator.serve_raw(INSTANCE_ACTION_PATH, None)
    assert get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)[0] == 404


def test_serve_token_issues_exactly_the_token_given(emulator):
    emulator.serve_token(b"abc\r\nX-Injected: yes")
    status, _, body = call(emulator.endpoint, "PUT", TOKEN_PATH, {TTL_HEADER: "60"})
    assert (status, body) == (200, b"abc\r\nX-Injected: yes")
    emulator.serve_token(b"fixed-token")
    assert token(emulator.endpoint) == "fixed-token"
    assert get(emulator.endpoint, "/latest/meta-data/instance-id", "fixed-token") == (200, b"i-0abc")
    emulator.serve_token(None)
    assert token(emulator.endpoint) != "fixed-token"


def test_delay_holds_answers(emulator):
    emulator.delay(0.3)
    started = time.monotonic()
    token(emulator.endpoint)
    assert time.monotonic() - started >= 0.3
    emulator.delay(0)
    started = time.monotonic()
    token(emulator.endpoint)
    assert time.monotonic() - started < 0.25


def test_refuse_and_accept_on_the_same_port(emulator):
    endpoint = emulator.endpoint
    tok = token(endpoint)
    emulator.refuse()
    assert not emulator.listening
    with pytest.raises(ConnectionRefusedError):
        get(endpoint, "/latest/meta-data/instance-id", tok)
    emulator.accept()
    assert emulator.endpoint == endpoint
    assert get(endpoint, "/latest/meta-data/instance-id", tok)[0] == 200  # tokens survive an outage


def test_refuse_drops_an_answer_in_flight(emulator):
    import threading

    emulator.delay(2)
    outcome = []

    def request():
        try:
            outcome.append(call(emulator.endpoint, "PUT", TOKEN_PATH, {TTL_HEADER: "60"}))
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=request)
    thread.start()
    deadline = time.monotonic() + 2
    while emulator.count(TOKEN_PATH) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    emulator.refuse()
    thread.join(5)
    assert time.monotonic() - started < 1
    assert isinstance(outcome[0], (OSError, http.client.HTTPException))


def test_counters(emulator):
    tok = token(emulator.endpoint)
    get(emulator.endpoint, INSTANCE_ACTION_PATH, tok)
    get(emulator.endpoint, INSTANCE_ACTION_PATH)
    assert emulator.count() == 3
    assert emulator.count(TOKEN_PATH, method="PUT") == 1
    assert emulator.count("spot/instance-action") == 2
    assert emulator.count("spot/instance-action", status=401) == 1
    assert emulator.requests[("GET", INSTANCE_ACTION_PATH, 404)] == 1


# -- the fixture and the command line -----------------------------------------------------------
def test_the_fixture_points_the_aws_variable_at_the_emulator(imds):
    assert os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == imds.endpoint
    assert imds.listening


def test_command_line_serves_a_notice_until_interrupted():
    process = subprocess.Popen(
        [sys.executable, "-m", "runctl.testing.imds", "--port", "0", "--notice-in", "0", "--deadline-in", "60",
         "--instance-id", "i-0cli"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        endpoint = process.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:")
        assert "spot instance-action terminate" in process.stdout.readline()
        tok = token(endpoint)
        assert get(endpoint, "/latest/meta-data/instance-id", tok) == (200, b"i-0cli")
        status, body = get(endpoint, INSTANCE_ACTION_PATH, tok)
        assert status == 200 and json.loads(body)["action"] == "terminate"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "Warning" not in err and "Traceback" not in err
