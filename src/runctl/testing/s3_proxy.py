"""A fault-injecting HTTP proxy to put in front of S3 (or moto), standard library only.

Point ``AWS_ENDPOINT_URL`` at the proxy and every request of the code under test goes
through it to the real endpoint (``upstream``), unchanged, except the ones it chooses to
fault. The faults are the ones a store meets on a real network:

- ``reset_before``: the connection is reset (TCP RST) before the request is forwarded:
  the request never reaches S3, the client sees a connection error.
- ``reset_after``: the request is forwarded and answered, then the connection is reset
  instead of answering: the request *landed* but the client cannot know (the ambiguous
  case: a retried conditional write then meets its own first write).
- ``truncate``: the answer is cut short (a part of it is sent, then the connection is
  closed): inside the body when there is one, else before its status code.
- ``stall``: the answer is held for some seconds before it is sent.

Which request gets which fault is decided by a :class:`FaultPlan`: scripted rules (the nth
request matching a method and a path pattern) and/or a seeded random policy
(``random.Random(seed)``, a fault with probability ``rate``). The plan's decisions follow
the order requests arrive in; concurrent clients make that order, and so the faulted
requests, vary from run to run even with the same seed. Every injected fault is recorded
(``faults``, ``fault_counts()``) for reports.

The proxy forwards the client's headers as they are (the Host header included, so SigV4
signatures stay valid) and speaks HTTP/1.1 with keep-alive to the client, as botocore's
connection pool expects; it opens a new connection upstream for every request.

    with S3FaultProxy(moto_url, FaultPlan(seed=7, rate=0.1)) as proxy:
        subprocess.run(cmd, env={**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint})
    print(proxy.fault_counts())

From a shell, in front of moto or MinIO (prints the endpoint, and the faults at Ctrl-C)::

    python -m runctl.testing.s3_proxy --upstream http://127.0.0.1:5000 --seed 7 --rate 0.1
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import random
import re
import signal
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

RESET_BEFORE = "reset_before"
RESET_AFTER = "reset_after"
TRUNCATE = "truncate"
STALL = "stall"
KINDS = (RESET_BEFORE, RESET_AFTER, TRUNCATE, STALL)

# Headers about one connection, not the request: never forwarded (Expect: 100-continue is
# answered by the proxy itself; Content-Length is set from the bytes actually sent).
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "expect", "content-length"}


_BEFORE_STATUS_CODE = b"HTTP/1.1 "


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"fault kind must be one of {', '.join(KINDS)}, not {kind!r}")


@dataclass(frozen=True)
class Fault:
    """What to do to one request. ``stall_s``: how long a stall holds the answer;
    ``keep``: the fraction of the body a truncation sends (0 <= keep < 1)."""

    kind: str
    stall_s: float = 1.0
    keep: float = 0.5


@dataclass(frozen=True)
class Rule:
    """A scripted fault: requests number ``nth`` .. ``nth + times - 1`` (counted from 1) among
    those whose method is ``method`` (any if None) and whose target (path and query string)
    contains a match of the regular expression ``path`` (any if None) get ``fault``."""

    fault: Fault
    method: str | None = None
    path: str | None = None
    nth: int = 1
    times: int = 1

    def __post_init__(self) -> None:
        _check_kind(self.fault.kind)
        if self.nth < 1 or self.times < 1:
            raise ValueError("nth and times count from 1")

    def matches(self, method: str, target: str) -> bool:
        return _matches(self.method, self.path, method, target)


def _matches(want_method: str | None, want_path: str | None, method: str, target: str) -> bool:
    return (want_method is None or want_method.upper() == method.upper()) and (
        want_path is None or re.search(want_path, target) is not None)


class FaultPlan:
    """Which fault, if any, each request gets; no I/O, called once per request in arrival order.

    Scripted ``rules`` come first: a request counts towards every rule it matches, and the
    first rule whose window it falls in decides. Otherwise, with a ``seed``, an eligible
    request (``method`` / ``path`` as in :class:`Rule`) gets a fault with probability
    ``rate``: a kind drawn from ``kinds``, a stall drawn from ``stall_s`` (low, high) and a
    truncation point drawn uniformly.
    """

    def __init__(self, rules: tuple[Rule, ...] | list[Rule] = (), *, seed: int | None = None, rate: float = 0.0,
                 kinds: tuple[str, ...] = KINDS, stall_s: tuple[float, float] = (0.2, 1.0),
                 method: str | None = None, path: str | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, not {rate}")
        if rate and seed is None:
            raise ValueError("a random fault rate needs a seed (runs must be reproducible)")
        if not kinds:
            raise ValueError("kinds is empty")
        for kind in kinds:
            _check_kind(kind)
        self.rules = tuple(rules)
        self.rate = rate
        self.kinds = tuple(kinds)
        self.stall_s = stall_s
        self.method = method
        self.path = path
        self._rng = random.Random(seed)
        self._seen = [0] * len(self.rules)

    def decide(self, method: str, target: str) -> Fault | None:
        chosen = None
        for i, rule in enumerate(self.rules):
            if rule.matches(method, target):
                self._seen[i] += 1
                if chosen is None and rule.nth <= self._seen[i] < rule.nth + rule.times:
                    chosen = rule.fault
        if chosen is not None or not self.rate or not _matches(self.method, self.path, method, target):
            return chosen
        # Three draws for every eligible request: the sequence of decisions depends on the
        # seed and the number of requests only.
        roll, kind, shape = self._rng.random(), self._rng.choice(self.kinds), self._rng.random()
        if roll >= self.rate:
            return None
        low, high = self.stall_s
        return Fault(kind, stall_s=low + (high - low) * shape, keep=shape)


@dataclass(frozen=True)
class InjectedFault:
    """One fault the proxy injected: the request's number at the proxy (from 1), what it was
    and what happened (e.g. the status S3 answered before a reset_after dropped it)."""

    number: int
    kind: str
    method: str
    target: str
    detail: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], proxy: S3FaultProxy) -> None:
        self.proxy = proxy
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: botocore reuses its pooled connections

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.proxy._relay(self)

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET  # noqa: N815

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("s3 proxy: " + format, *args)


class S3FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port``) that
    injects the faults its :class:`FaultPlan` chooses. ``plan`` may be replaced at any time."""

    def __init__(self, upstream: str, plan: FaultPlan | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 upstream_timeout: float = 60.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http://host:port URL, not {upstream!r}")
        self.upstream = upstream
        self.plan = plan or FaultPlan()
        self.host = host
        self._upstream_address = (parts.hostname, parts.port or 80)
        self._upstream_timeout = upstream_timeout
        self._port = port
        self._lock = threading.Lock()
        self._requests = 0
        self._faults: list[InjectedFault] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: for ``AWS_ENDPOINT_URL``."""
        if self._server is None:
            raise RuntimeError("the S3 proxy is not running")
        return f"http://{self.host}:{self._port}"

    def start(self) -> str:
        """Listen (port 0: a free port); return the endpoint URL."""
        if self._server is not None:
            return self.endpoint
        self._stopping.clear()
        self._server = _Server((self.host, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"s3-fault-proxy-{self._port}")
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        """Stop listening, wake stalled answers (they are dropped) and close the clients'
        idle keep-alive connections, so that no handler thread outlives the proxy."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with server.connections_lock:
            for connection in list(server.open_connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> S3FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- what was seen -------------------------------------------------------------------
    @property
    def requests(self) -> int:
        """Requests received (faulted or not)."""
        with self._lock:
            return self._requests

    @property
    def faults(self) -> list[InjectedFault]:
        with self._lock:
            return list(self._faults)

    def fault_counts(self) -> Counter[str]:
        """Injected faults by kind."""
        with self._lock:
            return Counter(f.kind for f in self._faults)

    # -- relaying ------------------------------------------------------------------------
    def _relay(self, handler: _Handler) -> None:
        method, target = handler.command, handler.path
        try:
            body = _read_body(handler)
        except (OSError, ValueError) as exc:  # the client went away or sent garbage
            log.debug("s3 proxy: cannot read the request %s %s: %s", method, target, exc)
            handler.close_connection = True
            return
        with self._lock:
            self._requests += 1
            number = self._requests
            fault = self.plan.decide(method, target)
        kind = fault.kind if fault else None
        if kind == RESET_BEFORE:
            self._record(number, fault, method, target, "not forwarded")
            _reset(handler)
            return
        try:
            status, reason, headers, payload = self._forward(method, target, handler.headers, body)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("s3 proxy: upstream %s failed for %s %s: %s", self.upstream, method, target, exc)
            status, reason, headers, payload = 502, "Bad Gateway", [("Content-Type", "text/plain")], str(exc).encode()
        answer = _answer(status, reason, headers, payload, head=method == "HEAD")
        if kind == RESET_AFTER:
            self._record(number, fault, method, target, f"forwarded, answer {status} dropped")
            _reset(handler)
            return
        if kind == TRUNCATE:
            cut = _cut_point(answer, len(payload) if method != "HEAD" else 0, fault.keep)
            self._record(number, fault, method, target, f"answer {status}: sent {cut} of {len(answer)} bytes")
            handler.close_connection = True  # closed gracefully after the part: the client reads an early EOF
            _send(handler, answer[:cut])
            return
        if kind == STALL:
            self._record(number, fault, method, target, f"answer {status} held {fault.stall_s:.2f} s")
            if self._stopping.wait(fault.stall_s):
                _reset(handler)
                return
        _send(handler, answer)

    def _record(self, number: int, fault: Fault, method: str, target: str, detail: str) -> None:
        log.info("s3 proxy: %s on request %d %s %s (%s)", fault.kind, number, method, target, detail)
        with self._lock:
            self._faults.append(InjectedFault(number, fault.kind, method, target, detail))

    def _forward(self, method: str, target: str, headers, body: bytes | None):
        connection = http.client.HTTPConnection(*self._upstream_address, timeout=self._upstream_timeout)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    connection.putheader(name, value)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            payload = response.read()
            return response.status, response.reason, response.getheaders(), payload
        finally:
            connection.close()


def _read_body(handler: _Handler) -> bytes | None:
    """The request body (None when the request has none), de-chunked."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline().strip():  # trailers, up to the blank line
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()  # the CRLF after the chunk
    length = handler.headers.get("Content-Length")
    return None if length is None else handler.rfile.read(int(length))


def _answer(status: int, reason: str, headers: list[tuple[str, str]], payload: bytes, *, head: bool) -> bytes:
    """The whole HTTP/1.1 answer to send the client. A HEAD answer keeps the upstream's
    Content-Length (the object's size) and has no body."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers
              if name.lower() not in _HOP_BY_HOP or (head and name.lower() == "content-length")]
    if not head:
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else payload)


def _cut_point(answer: bytes, body_length: int, keep: float) -> int:
    """Where a truncation cuts: inside the body when there is one (at least its last byte
    missing); else before the status code. (http.client reads headers up to EOF without
    complaint, so an answer without a body cut after its status code would pass for a
    whole one with fewer headers.)"""
    if body_length:
        head_length = len(answer) - body_length
        return head_length + min(int(body_length * keep), body_length - 1)
    return int(len(_BEFORE_STATUS_CODE) * keep)


def _send(handler: _Handler, data: bytes) -> None:
    try:
        handler.wfile.write(data)
    except OSError:  # the client gave up (a timeout) meanwhile
        handler.close_connection = True


def _reset(handler: _Handler) -> None:
    """Drop the client's connection with a TCP RST (SO_LINGER 0), as a dying middlebox does."""
    handler.close_connection = True
    connection = handler.connection
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.rfile.close()  # the file holds a reference: the socket closes only once it is gone
    connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runctl.testing.s3_proxy",
        description="Proxy HTTP requests to an S3 endpoint (moto, MinIO), injecting faults, until Ctrl-C. "
                    "The first line printed is the endpoint (for AWS_ENDPOINT_URL); the faults injected "
                    "are printed at the end.")
    parser.add_argument("--upstream", required=True, help="the endpoint to forward to, http://host:port")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.1,
                        help="chance that a request is faulted (default %(default)s)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="fault kinds to draw from (default: all)")
    parser.add_argument("--stall", type=float, nargs=2, default=(0.2, 1.0), metavar=("LOW", "HIGH"),
                        help="seconds a stall holds an answer (default 0.2 1.0)")
    args = parser.parse_args(argv)
    try:
        plan = FaultPlan(seed=args.seed, rate=args.rate, kinds=tuple(args.kinds.split(",")),
                         stall_s=tuple(args.stall))
        proxy = S3FaultProxy(args.upstream, plan, port=args.port)
    except ValueError as exc:
        parser.error(str(exc))

    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before anything is served: Ctrl-C at any moment is clean
        signal.signal(signum, lambda *_: stopped.set())
    try:
        endpoint = proxy.start()
    except OSError as exc:
        parser.exit(2, f"cannot listen on {proxy.host}:{args.port}: {exc}\n")
    try:
        print(endpoint, flush=True)
        while not stopped.wait(0.2):
            pass
    finally:
        proxy.stop()
    counts = proxy.fault_counts()
    print(f"{proxy.requests} requests, {sum(counts.values())} faults: "
          + (", ".join(f"{kind} {counts[kind]}" for kind in KINDS if counts[kind]) or "none"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
