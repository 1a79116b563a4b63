"""A local emulator of the EC2 instance metadata service (IMDS), standard library only.

It plays the part AWS's amazon-ec2-metadata-mock (a Go binary) plays elsewhere, with the
same semantics where they matter to a client:

- IMDSv2 tokens: ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds``
  (an integer 1..21600, else 400; a missing header is 400) answers a token and echoes the
  TTL header. A token expires after its TTL, judged by the emulator's (injectable) clock.
  A GET with an unknown or expired token is 401. With ``tokens_required`` (the default, as
  on instances launched with ``HttpTokens=required``) a GET without a token is 401 too;
  without it, IMDSv1 GETs are served.
- ``spot/instance-action`` is 404 until a scheduled notice appears, then
  ``{"action": "terminate", "time": "2026-11-29T08:22:00Z"}``; ``spot/termination-time``
  (legacy) is the same time as plain text; ``events/recommendations/rebalance`` is 404 until
  sent, then ``{"noticeTime": "..."}``. Plus instance-id, instance-type,
  placement/availability-zone, placement/region, instance-life-cycle and the instance
  identity document. Anything else is 404 (an HTML page, as IMDS answers).

Differences from the Go mock, on purpose:

- A notice's ``time`` is fixed: ``deadline_in`` seconds after the notice appears (the mock
  recomputes "now + 2 min" on every request, so a client deduplicating by content sees a
  new notice each time).
- ``time`` is formatted to the second in UTC, truncated, as AWS serves it; no extra field
  is added to the JSON. Tests that compress time read the exact deadline from
  ``ImdsEmulator.deadline_epoch`` (or ``.notice.deadline_epoch``).

Fault injection: ``fail_next`` (HTTP errors), ``delay`` (slow answers), ``refuse`` /
``accept`` (stop listening and listen again on the same port), ``malformed_next`` (invalid
JSON on instance-action), ``serve_raw`` (any body on a path, e.g. a hostile notice),
``serve_token`` (any token, e.g. one with CR/LF in it), ``expire_tokens``. ``count`` tells
how many requests were seen.

Use it from Python (``with ImdsEmulator() as imds: ...``), as the pytest fixture ``imds``
(import it into a conftest.py), or from a shell::

    python -m runctl.testing.imds --port 1338 --notice-in 5
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600
INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
TERMINATION_TIME_PATH = "/latest/meta-data/spot/termination-time"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
IDENTITY_PATH = "/latest/dynamic/instance-identity/document"
DEFAULT_PORT = 1338  # amazon-ec2-metadata-mock's default
ACTIONS = ("terminate", "stop", "hibernate")

_PAGE = ('<?xml version="1.0" encoding="iso-8859-1"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 '
         'Transitional//EN"\n "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n<html xmlns='
         '"http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n <head>\n  <title>{0}</title>\n </head>\n'
         ' <body>\n  <h1>{0}</h1>\n </body>\n</html>\n')
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}

Response = tuple[int, dict[str, str], bytes]


def format_time(epoch: float) -> str:
    """Epoch seconds -> ``2026-11-29T08:22:00Z`` (UTC, truncated to the second), as IMDS writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True)
class ScheduledNotice:
    """A spot interruption notice: served from ``visible_at``; the machine goes at ``deadline_epoch``."""

    action: str
    visible_at: float
    deadline_epoch: float

    @property
    def time(self) -> str:
        return format_time(self.deadline_epoch)

    def document(self) -> dict[str, str]:
        return {"action": self.action, "time": self.time}


@dataclass(frozen=True)
class ScheduledRebalance:
    """A rebalance recommendation, served from ``visible_at``."""

    visible_at: float

    @property
    def notice_time(self) -> str:
        return format_time(self.visible_at)


@dataclass
class _Fault:
    remaining: int
    status: int
    path: str | None


def _error(status: int) -> Response:
    title = f"{status} - {_REASONS.get(status, 'Error')}"
    return status, {"Content-Type": "text/html"}, _PAGE.format(title).encode()


def _text(value: str) -> Response:
    return 200, {"Content-Type": "text/plain"}, value.encode()


def _json(value: dict) -> Response:
    return 200, {"Content-Type": "text/plain"}, json.dumps(value, indent=2).encode()


def _matches(path: str, wanted: str | None) -> bool:
    return wanted is None or path.rstrip("/").endswith(wanted.rstrip("/"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: ImdsEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: refuse() leaves none open
    server_version = "EC2ws"

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.emulator._serve(self, "GET")

    def do_PUT(self) -> None:  # noqa: N802
        self.server.emulator._serve(self, "PUT")

    def do_POST(self) -> None:  # noqa: N802
        self.server.emulator._serve(self, "POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self.server.emulator._serve(self, "DELETE")

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("imds emulator: " + format, *args)


class ImdsEmulator:
    """The EC2 instance metadata service of one emulated instance, on 127.0.0.1."""

    def __init__(self, *, instance_id: str = "i-0123456789abcdef0", instance_type: str = "m5.large",
                 region: str = "us-east-1", availability_zone: str | None = None, lifecycle: str = "spot",
                 tokens_required: bool = True, clock: Callable[[], float] = time.time,
                 host: str = "127.0.0.1", port: int = 0, ami_id: str = "ami-0123456789abcdef0",
                 private_ip: str = "10.0.0.10") -> None:
        self.instance_id = instance_id
        self.private_ip = private_ip  # local-ipv4: the address the job's other machines reach it at
        self.instance_type = instance_type
        self.region = region
        self.availability_zone = availability_zone or f"{region}a"
        self.lifecycle = lifecycle
        self.ami_id = ami_id
        self.tokens_required = tokens_required
        self.host = host
        self._clock = clock
        self._port = port
        self._lock = threading.Lock()  # the served state
        self._life = threading.Lock()  # start/stop/refuse/accept
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._generation = 0  # bumped when the listener goes away: answers in flight are dropped
        self._wake = threading.Event()
        self._tokens: dict[str, float] = {}
        self._notice: ScheduledNotice | None = None
        self._rebalance: ScheduledRebalance | None = None
        self._notice_first_served: float | None = None
        self._faults: list[_Fault] = []
        self._malformed = 0
        self._raw: dict[str, bytes] = {}
        self._token_override: bytes | None = None
        self._delay = 0.0
        self._counts: Counter[tuple[str, str, int]] = Counter()
        self._started_once = False
        self._pending_time = format_time(clock())

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: for ``AWS_EC2_METADATA_SERVICE_ENDPOINT``. Same after refuse()."""
        if not self._started_once:
            raise RuntimeError("the IMDS emulator has not been started")
        return f"http://{self.host}:{self._port}"

    def start(self) -> str:
        """Listen (port 0: a free port, kept for the emulator's life); return the endpoint URL."""
        with self._life:
            self._listen()
        return self.endpoint

    def stop(self) -> None:
        with self._life:
            self._unlisten()

    def __enter__(self) -> ImdsEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def refuse(self) -> None:
        """Stop listening: connections are refused, answers in flight are dropped unsent."""
        with self._life:
            if not self._started_once:
                raise RuntimeError("the IMDS emulator has not been started")
            self._unlisten()

    def accept(self) -> None:
        """Listen again on the same port after refuse()."""
        with self._life:
            if not self._started_once:
                raise RuntimeError("the IMDS emulator has not been started")
            self._listen()

    @property
    def listening(self) -> bool:
        return self._server is not None

    def _listen(self) -> None:
        if self._server is not None:
            return
        server = _Server((self.host, self._port), self)
        self._port = server.server_address[1]
        self._wake = threading.Event()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"imds-emulator-{self._port}")
        self._thread.start()
        self._started_once = True

    def _unlisten(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._generation += 1
        self._wake.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    # -- scenario ------------------------------------------------------------------------
    def schedule_notice(self, in_seconds: float = 0.0, action: str = "terminate",
                        deadline_in: float = 120.0) -> ScheduledNotice:
        """Serve a spot interruption notice ``in_seconds`` from now, for ``deadline_in`` after that."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        visible_at = self._clock() + in_seconds
        notice = ScheduledNotice(action, visible_at, visible_at + deadline_in)
        with self._lock:
            self._notice = notice
            self._notice_first_served = None
        return notice

    def send_rebalance(self, in_seconds: float = 0.0) -> ScheduledRebalance:
        """Serve a rebalance recommendation ``in_seconds`` from now."""
        rebalance = ScheduledRebalance(self._clock() + in_seconds)
        with self._lock:
            self._rebalance = rebalance
        return rebalance

    def clear(self) -> None:
        """Withdraw the notice and the rebalance recommendation (faults and tokens stay)."""
        with self._lock:
            self._notice = self._rebalance = self._notice_first_served = None

    @property
    def notice(self) -> ScheduledNotice | None:
        return self._notice

    @property
    def deadline_epoch(self) -> float | None:
        """The exact time the scheduled notice names (its ``time`` field is this, truncated)."""
        return self._notice.deadline_epoch if self._notice else None

    @property
    def rebalance(self) -> ScheduledRebalance | None:
        return self._rebalance

    @property
    def notice_first_served(self) -> float | None:
        """When (emulator clock) instance-action first answered the notice; None before."""
        return self._notice_first_served

    # -- faults --------------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 500, path: str | None = None) -> None:
        """Answer the next ``n`` requests (to ``path``, a full path or its tail, if given) with ``status``."""
        with self._lock:
            self._faults.append(_Fault(n, status, path))

    def delay(self, seconds: float) -> None:
        """Hold every answer for ``seconds`` (0: answer at once)."""
        with self._lock:
            self._delay = max(0.0, seconds)

    def malformed_next(self, n: int) -> None:
        """Answer the next ``n`` GETs of instance-action with 200 and invalid JSON."""
        with self._lock:
            self._malformed += n

    def serve_raw(self, path: str, body: bytes | None) -> None:
        """Answer GETs of ``path`` (a full path) with 200 and exactly ``body``, whatever the
        scenario says, until called again with None."""
        with self._lock:
            if body is None:
                self._raw.pop(path, None)
            else:
                self._raw[path] = body

    def serve_token(self, token: bytes | None) -> None:
        """Issue exactly ``token`` to every token PUT (None: random tokens again). It is also
        accepted on GETs, as far as a header can carry it."""
        with self._lock:
            self._token_override = token

    def expire_tokens(self) -> None:
        """Forget every token issued so far: their next use is 401."""
        with self._lock:
            self._tokens.clear()

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._malformed = 0
            self._raw.clear()
            self._token_override = None
            self._delay = 0.0

    # -- what was seen -------------------------------------------------------------------
    def count(self, path: str | None = None, method: str | None = None, status: int | None = None) -> int:
        """Requests seen, optionally only those to ``path`` (full or tail), by ``method``, answered ``status``."""
        with self._lock:
            return sum(n for (m, p, s), n in self._counts.items()
                       if _matches(p, path) and method in (None, m) and status in (None, s))

    @property
    def requests(self) -> dict[tuple[str, str, int], int]:
        """(method, path, status) -> how many."""
        with self._lock:
            return dict(self._counts)

    # -- serving -------------------------------------------------------------------------
    def _serve(self, handler: _Handler, method: str) -> None:
        path = urlsplit(handler.path).path
        generation, wake = self._generation, self._wake
        with self._lock:
            status, headers, body = self._respond(method, path, handler.headers)
            self._counts[(method, path, status)] += 1
            delay = self._delay
        if delay:
            wake.wait(delay)
        if generation != self._generation:
            handler.close_connection = True  # the service "went away" meanwhile: no answer
            return
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the client hung up

    def _respond(self, method: str, path: str, headers) -> Response:
        now = self._clock()
        for fault in self._faults:
            if fault.remaining > 0 and _matches(path, fault.path):
                fault.remaining -= 1
                self._faults = [f for f in self._faults if f.remaining > 0]
                return _error(fault.status)
        if path == TOKEN_PATH:
            return self._issue_token(headers, now) if method == "PUT" else _error(405)
        if method != "GET":
            return _error(405)
        token = headers.get(TOKEN_HEADER)
        if token is None:
            if self.tokens_required:
                return _error(401)
        elif self._tokens.get(token, now) <= now:
            self._tokens.pop(token, None)
            return _error(401)
        return self._metadata(path.rstrip("/") or "/", now)

    def _issue_token(self, headers, now: float) -> Response:
        raw = headers.get(TTL_HEADER)
        try:
            ttl = int(raw.strip()) if raw is not None else 0
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return _error(400)
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        issued = self._token_override or secrets.token_urlsafe(42).encode()
        self._tokens[issued.decode("latin-1")] = now + ttl  # as http.server decodes header values
        return 200, {"Content-Type": "text/plain", TTL_HEADER: str(ttl)}, issued

    def _static(self) -> dict[str, str]:
        return {
            "/latest/meta-data/ami-id": self.ami_id,
            "/latest/meta-data/instance-id": self.instance_id,
            "/latest/meta-data/instance-type": self.instance_type,
            "/latest/meta-data/local-ipv4": self.private_ip,
            "/latest/meta-data/instance-life-cycle": self.lifecycle,
            "/latest/meta-data/placement/availability-zone": self.availability_zone,
            "/latest/meta-data/placement/region": self.region,
        }

    def _metadata(self, path: str, now: float) -> Response:
        if path in self._raw:
            return 200, {"Content-Type": "text/plain"}, self._raw[path]
        static = self._static()
        if path in static:
            return _text(static[path])
        notice = self._notice if self._notice and self._notice.visible_at <= now else None
        if path == INSTANCE_ACTION_PATH:
            if self._malformed > 0:
                self._malformed -= 1
                return 200, {"Content-Type": "text/plain"}, b'{"action": "terminate", "time": '
            if notice is None:
                return _error(404)
            if self._notice_first_served is None:
                self._notice_first_served = now
            return _json(notice.document())
        if path == TERMINATION_TIME_PATH:
            return _text(notice.time) if notice else _error(404)
        if path == REBALANCE_PATH:
            rebalance = self._rebalance
            if rebalance is None or rebalance.visible_at > now:
                return _error(404)
            return _json({"noticeTime": rebalance.notice_time})
        if path == IDENTITY_PATH:
            return _json({
                "accountId": "123456789012", "architecture": "x86_64", "availabilityZone": self.availability_zone,
                "imageId": self.ami_id, "instanceId": self.instance_id, "instanceType": self.instance_type,
                "pendingTime": self._pending_time, "privateIp": self.private_ip, "region": self.region,
                "version": "2017-09-30",
            })
        known = [*static, INSTANCE_ACTION_PATH, TERMINATION_TIME_PATH, REBALANCE_PATH, IDENTITY_PATH]
        children = sorted({k[len(path) + 1:].split("/")[0] + ("/" if "/" in k[len(path) + 1:] else "")
                           for k in known if k.startswith(path + "/")})
        return _text("\n".join(children)) if children else _error(404)


try:  # the pytest fixture, for a conftest.py: ``from runctl.testing.imds import imds  # noqa: F401``
    import pytest
except ImportError:  # pragma: no cover - pytest is a test dependency only
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture
    def imds(monkeypatch):
        """A started ImdsEmulator (spot, tokens required); AWS_EC2_METADATA_SERVICE_ENDPOINT points at it."""
        with ImdsEmulator() as emulator:
            monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", emulator.endpoint)
            yield emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runctl.testing.imds",
        description="Serve an emulated EC2 instance metadata service until Ctrl-C. "
                    "The first line printed is the endpoint (for AWS_EC2_METADATA_SERVICE_ENDPOINT).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (default %(default)s)")
    parser.add_argument("--notice-in", type=float, metavar="S", help="serve a spot interruption notice S seconds from now")
    parser.add_argument("--action", choices=ACTIONS, default="terminate")
    parser.add_argument("--deadline-in", type=float, default=120.0, metavar="S",
                        help="the notice's time is S seconds after it appears (default %(default)s)")
    parser.add_argument("--rebalance-in", type=float, metavar="S", help="send a rebalance recommendation S seconds from now")
    parser.add_argument("--instance-id", default="i-0123456789abcdef0")
    parser.add_argument("--instance-type", default="m5.large")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--lifecycle", default="spot", help="instance-life-cycle: spot or on-demand")
    parser.add_argument("--no-tokens-required", dest="tokens_required", action="store_false",
                        help="also serve IMDSv1 requests (without a token)")
    args = parser.parse_args(argv)

    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before anything is served: Ctrl-C at any moment is clean
        signal.signal(signum, lambda *_: stopped.set())
    emulator = ImdsEmulator(instance_id=args.instance_id, instance_type=args.instance_type, region=args.region,
                            lifecycle=args.lifecycle, tokens_required=args.tokens_required,
                            host=args.host, port=args.port)
    try:
        endpoint = emulator.start()
    except OSError as exc:
        parser.exit(2, f"cannot listen on {args.host}:{args.port}: {exc}\n")
    try:
        print(endpoint, flush=True)
        if args.notice_in is not None:
            notice = emulator.schedule_notice(args.notice_in, action=args.action, deadline_in=args.deadline_in)
            print(f"spot instance-action {notice.action} appears in {args.notice_in:g}s, time {notice.time}",
                  flush=True)
        if args.rebalance_in is not None:
            rebalance = emulator.send_rebalance(args.rebalance_in)
            print(f"rebalance recommendation appears in {args.rebalance_in:g}s ({rebalance.notice_time})",
                  flush=True)
        while not stopped.wait(0.2):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
