"""The fault-injecting S3 proxy, seen by a boto3 client in front of the moto server: each
fault kind as the client meets it, and what really reached S3 (read directly from moto)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from runctl.testing import Fault, FaultPlan, Rule, S3FaultProxy
from runctl.testing.s3_proxy import KINDS, RESET_AFTER, RESET_BEFORE, STALL, TRUNCATE

KEY = "data/object.bin"
BODY = bytes(range(256)) * 64  # 16 KiB: a body a truncation can cut in the middle


@pytest.fixture
def proxy(moto_server):
    with S3FaultProxy(moto_server) as running:
        yield running


def client_via(endpoint: str, *, attempts: int = 2, read_timeout: float = 10):
    """A boto3 S3 client on the proxy at ``endpoint`` making at most ``attempts`` attempts per call (as
    AWS_MAX_ATTEMPTS does)."""
    import boto3

    config = Config(retries={"mode": "standard", "total_max_attempts": attempts}, read_timeout=read_timeout,
                    connect_timeout=2)
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)


def put_rule(kind: str, *, times: int = 1, **fault) -> Rule:
    return Rule(Fault(kind, **fault), method="PUT", path=KEY + "$", times=times)


def exists(s3_client, bucket: str) -> bool:
    try:
        s3_client.head_object(Bucket=bucket, Key=KEY)
    except ClientError:
        return False
    return True


# -- each fault kind, as a boto3 client meets it --------------------------------------------

def test_a_request_without_faults_passes_through_unchanged(proxy, s3_bucket, s3_client):
    s3 = client_via(proxy.endpoint)
    etag = s3.put_object(Bucket=s3_bucket, Key=KEY, Body=BODY)["ETag"]
    assert s3_client.get_object(Bucket=s3_bucket, Key=KEY)["Body"].read() == BODY
    got = s3.get_object(Bucket=s3_bucket, Key=KEY)
    assert got["Body"].read() == BODY and got["ETag"] == etag
    assert s3.head_object(Bucket=s3_bucket, Key=KEY)["ContentLength"] == len(BODY)  # HEAD keeps its length
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=s3_bucket, Key="nope")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    assert proxy.requests == 4 and proxy.faults == []


def test_reset_before_forwarding_never_reaches_s3(proxy, s3_bucket, s3_client):
    proxy.plan = FaultPlan([put_rule(RESET_BEFORE, times=2)])
    with pytest.raises(BotoCoreError):  # both attempts reset
        client_via(proxy.endpoint, attempts=2).put_object(Bucket=s3_bucket, Key=KEY, Body=BODY)
    assert not exists(s3_client, s3_bucket)
    assert [(f.kind, f.method, f.detail) for f in proxy.faults] == [(RESET_BEFORE, "PUT", "not forwarded")] * 2


def test_botocore_retries_through_one_reset(proxy, s3_bucket, s3_client):
    proxy.plan = FaultPlan([put_rule(RESET_BEFORE)])
    client_via(proxy.endpoint, attempts=2).put_object(Bucket=s3_bucket, Key=KEY, Body=BODY)
    assert s3_client.get_object(Bucket=s3_bucket, Key=KEY)["Body"].read() == BODY
    assert proxy.requests == 2 and proxy.fault_counts() == {RESET_BEFORE: 1}


def test_reset_after_forwarding_the_write_landed_but_the_client_got_an_error(proxy, s3_bucket, s3_client):
    proxy.plan = FaultPlan([put_rule(RESET_AFTER, times=2)])
    with pytest.raises(BotoCoreError):
        client_via(proxy.endpoint, attempts=2).put_object(Bucket=s3_bucket, Key=KEY, Body=BODY)
    assert s3_client.get_object(Bucket=s3_bucket, Key=KEY)["Body"].read() == BODY
    assert [f.detail for f in proxy.faults] == ["forwarded, answer 200 dropped"] * 2


def test_a_retried_conditional_write_meets_its_own_first_write(proxy, s3_bucket, s3_client):
    """The ambiguous case: the create landed, its answer was lost, and the retry is refused
    (412) because of it. Only reading back tells the client that the object is its own."""
    proxy.plan = FaultPlan([put_rule(RESET_AFTER)])
    with pytest.raises(ClientError) as refused:
        client_via(proxy.endpoint, attempts=2).put_object(Bucket=s3_bucket, Key=KEY, Body=BODY, IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3_client.get_object(Bucket=s3_bucket, Key=KEY)["Body"].read() == BODY
    assert proxy.fault_counts() == {RESET_AFTER: 1}


def test_a_truncated_object_body_fails_the_read(proxy, s3_bucket, s3_client):
    s3_client.put_object(Bucket=s3_bucket, Key=KEY, Body=BODY)
    proxy.plan = FaultPlan([Rule(Fault(TRUNCATE, keep=0.5), method="GET", path=KEY + "$")])
    response = client_via(proxy.endpoint, attempts=2).get_object(Bucket=s3_bucket, Key=KEY)  # the headers came whole
    with pytest.raises(BotoCoreError):
        response["Body"].read()
    (fault,) = proxy.faults
    assert fault.kind == TRUNCATE and fault.detail.startswith("answer 200: sent ")
    sent, total = (int(n) for n in fault.detail.removeprefix("answer 200: sent ").split(" bytes")[0].split(" of "))
    assert total - len(BODY) < sent < total  # cut inside the body


def test_a_truncated_answer_without_a_body_is_cut_in_its_status_line_and_retried(proxy, s3_bucket, s3_client):
    proxy.plan = FaultPlan([put_rule(TRUNCATE, keep=0.5)])
    s3 = client_via(proxy.endpoint, attempts=2)
    s3.put_object(Bucket=s3_bucket, Key=KEY, Body=BODY)  # the first answer was cut: botocore put it again
    assert s3_client.get_object(Bucket=s3_bucket, Key=KEY)["Body"].read() == BODY
    assert proxy.requests == 2 and proxy.fault_counts() == {TRUNCATE: 1}


def test_a_stall_delays_the_answer(proxy, s3_bucket, s3_client):
    s3_client.put_object(Bucket=s3_bucket, Key=KEY, Body=BODY)
    proxy.plan = FaultPlan([Rule(Fault(STALL, stall_s=0.6), method="HEAD")])
    started = time.monotonic()
    assert client_via(proxy.endpoint).head_object(Bucket=s3_bucket, Key=KEY)["ContentLength"] == len(BODY)
    assert time.monotonic() - started >= 0.6
    assert [f.detail for f in proxy.faults] == ["answer 200 held 0.60 s"]


def test_a_stall_longer_than_the_read_timeout_times_the_client_out(proxy, s3_bucket, s3_client):
    s3_client.put_object(Bucket=s3_bucket, Key=KEY, Body=BODY)
    proxy.plan = FaultPlan([Rule(Fault(STALL, stall_s=3.0), method="GET")])
    with pytest.raises(BotoCoreError, match="timeout"):
        client_via(proxy.endpoint, attempts=1, read_timeout=0.5).get_object(Bucket=s3_bucket, Key=KEY)


# -- choosing the requests ---------------------------------------------------------------------

def test_a_rule_faults_the_nth_matching_request_only(proxy, s3_bucket):
    proxy.plan = FaultPlan([Rule(Fault(RESET_BEFORE), method="PUT", path=r"/k\d$", nth=2)])
    s3 = client_via(proxy.endpoint, attempts=1)
    s3.put_object(Bucket=s3_bucket, Key="k1", Body=b"1")
    s3.get_object(Bucket=s3_bucket, Key="k1")  # matches the path, not the method: not counted
    s3.put_object(Bucket=s3_bucket, Key="other", Body=b"x")
    with pytest.raises(BotoCoreError):
        s3.put_object(Bucket=s3_bucket, Key="k2", Body=b"2")
    s3.put_object(Bucket=s3_bucket, Key="k3", Body=b"3")
    assert [(f.number, f.target.rsplit("/", 1)[-1]) for f in proxy.faults] == [(4, "k2")]


def test_a_seeded_plan_decides_the_same_way_every_time():
    requests = [("PUT", f"/b/k{i}") for i in range(400)]

    def decisions(seed: int):
        plan = FaultPlan(seed=seed, rate=0.25, stall_s=(0.1, 0.3))
        return [plan.decide(method, target) for method, target in requests]

    first = decisions(7)
    assert first == decisions(7) and first != decisions(8)
    faulted = [f for f in first if f is not None]
    assert 60 < len(faulted) < 140  # a quarter of 400, give or take
    assert {f.kind for f in faulted} == set(KINDS)
    assert all(0.1 <= f.stall_s <= 0.3 and 0 <= f.keep < 1 for f in faulted)


def test_a_plan_faults_only_eligible_requests_and_rules_come_first():
    plan = FaultPlan([Rule(Fault(STALL), path="/lease")], seed=1, rate=1.0, kinds=(RESET_AFTER,), method="PUT")
    assert plan.decide("GET", "/b/x") is None
    assert plan.decide("PUT", "/b/x").kind == RESET_AFTER
    assert plan.decide("PUT", "/b/jobs/j/lease.json").kind == STALL  # the rule's one time
    assert plan.decide("PUT", "/b/jobs/j/lease.json").kind == RESET_AFTER
    assert FaultPlan(seed=1, rate=0.0).decide("PUT", "/b/x") is None


@pytest.mark.parametrize("make", [
    lambda: FaultPlan(rate=0.5),  # no seed
    lambda: FaultPlan(seed=1, rate=1.5),
    lambda: FaultPlan(seed=1, kinds=("explode",)),
    lambda: Rule(Fault("explode")),
    lambda: Rule(Fault(STALL), nth=0),
])
def test_a_plan_refuses_what_it_cannot_do(make):
    with pytest.raises(ValueError):
        make()


# -- life cycle ----------------------------------------------------------------------------

def test_stop_closes_idle_keep_alive_connections_and_frees_the_port(moto_server, s3_bucket):
    proxy = S3FaultProxy(moto_server)
    with pytest.raises(RuntimeError):
        proxy.endpoint  # noqa: B018
    with proxy:
        port = int(proxy.endpoint.rsplit(":", 1)[1])
        client_via(proxy.endpoint).list_objects_v2(Bucket=s3_bucket)  # leaves a pooled connection open
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_command_line_proxies_until_interrupted_and_prints_the_faults(moto_server, s3_bucket, s3_client):
    process = subprocess.Popen(
        [sys.executable, "-m", "runctl.testing.s3_proxy", "--upstream", moto_server, "--seed", "3", "--rate", "1",
         "--kinds", "reset_after"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        endpoint = process.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:")
        with pytest.raises(BotoCoreError):
            client_via(endpoint, attempts=2).put_object(Bucket=s3_bucket, Key=KEY, Body=BODY)
        assert exists(s3_client, s3_bucket)  # every request landed, every answer was lost
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.strip() == "2 requests, 2 faults: reset_after 2"
    assert "Warning" not in err and "Traceback" not in err
