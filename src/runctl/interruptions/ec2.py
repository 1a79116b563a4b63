"""Spot interruption notices and rebalance recommendations from the EC2 metadata service.

``Ec2MetadataSource`` watches IMDS in a background thread: about once a second it reads
``spot/instance-action`` and ``events/recommendations/rebalance`` (IMDSv2, a token kept and
refreshed before it expires, a new one after any 401). ``poll()`` only hands over what the
thread found, so the agent's loop never waits on HTTP. Each distinct notice is reported once
(deduplicated by content, as aws-node-termination-handler does), also across attempts.

Errors (HTTP 5xx, timeouts, refused connections, malformed answers: a token that is not
visible ASCII, which is never sent as a header; a notice that is not a JSON object with a
one-line action, however deeply nested) are retried with exponential backoff and logged at
most once a minute, without a traceback; ``health`` says whether the service
answers, so a status can read "metadata service unreachable since ..." rather than showing
no notice forever.

The HTTP is plain ``http.client`` with a short timeout, one connection per request and no
proxy (IMDS must never go through ``http_proxy``); botocore would hide those details.
The endpoint is the constructor's, else ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (as botocore
reads it, so ``runctl.testing.imds`` can stand in), else http://169.254.169.254
(``AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6``: http://[fd00:ec2::254]).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

from runctl.errors import UsageError
from runctl.models import InterruptionNotice, Record

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
DEFAULT_ENDPOINT_IPV6 = "http://[fd00:ec2::254]"
ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
ENDPOINT_MODE_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"
DISABLED_ENV = "AWS_EC2_METADATA_DISABLED"
TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600
INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
LIFECYCLE_PATH = "/latest/meta-data/instance-life-cycle"
V1_RETRY_AFTER = 60.0  # after a PUT answered 403/404/405, use IMDSv1 this long before asking again
# What a token may hold: visible ASCII. Anything else (CR/LF above all) would be sent as a
# header, i.e. a header injection, or fail in http.client with a ValueError.
_TOKEN = re.compile(r"[\x21-\x7e]+\Z")


def resolve_endpoint(endpoint: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The IMDS base URL: ``endpoint``, else the environment's, else the link-local address."""
    env = os.environ if environ is None else environ
    if not endpoint:
        endpoint = env.get(ENDPOINT_ENV) or (
            DEFAULT_ENDPOINT_IPV6 if env.get(ENDPOINT_MODE_ENV, "").lower() == "ipv6" else DEFAULT_ENDPOINT)
    return endpoint.rstrip("/")


def parse_imds_time(text: str) -> float:
    """``2026-11-29T08:22:00Z`` -> epoch seconds. A time without a zone is UTC. ValueError if not a time."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.timestamp()
    except OverflowError as exc:  # year 1 with a positive offset, on some platforms
        raise ValueError(f"time out of range: {text!r}") from exc


class MetadataError(Exception):
    """IMDS did not answer (refused, timed out, broken answer) or answered an HTTP error."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):  # a ConnectionResetError too
        return "connection closed without an answer"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    return str(exc) or type(exc).__name__


class ImdsClient:
    """A small IMDSv2 client: one connection per request, the token kept and refreshed.

    The token is renewed when less than ``min(60 s, 10% of its TTL)`` is left, and after any
    401. If the token PUT is answered 403/404/405 (no IMDSv2 there), GETs go without a token
    (IMDSv1), as botocore does, and a token is asked for again a minute later or after a 401.
    Not thread-safe, except ``interrupt()``.
    """

    def __init__(self, endpoint: str | None = None, *, timeout: float = 2.0, token_ttl: int = MAX_TOKEN_TTL,
                 clock: Callable[[], float] = time.time) -> None:
        if not 1 <= int(token_ttl) <= MAX_TOKEN_TTL:
            raise UsageError(f"IMDS token TTL must be 1..{MAX_TOKEN_TTL} seconds, not {token_ttl}")
        self.endpoint = resolve_endpoint(endpoint)
        parts = urlsplit(self.endpoint)
        try:
            self._port = parts.port
        except ValueError:
            self._port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or self._port == -1:
            raise UsageError(f"invalid EC2 metadata endpoint {self.endpoint!r}",
                             hint=f"use a URL like {DEFAULT_ENDPOINT} (see {ENDPOINT_ENV})")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._base = parts.path.rstrip("/")
        self.timeout = timeout
        self.token_ttl = int(token_ttl)
        self._clock = clock
        self._token: str | None = None
        self._token_expires = 0.0
        self._v1_until = 0.0
        self._in_flight: http.client.HTTPConnection | None = None
        self._in_flight_lock = threading.Lock()
        self.tokens_fetched = 0  # counters, for tests and diagnostics
        self.unauthorized = 0

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange: (status, headers with lower-case names, body). MetadataError if none."""
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = kind(self._host, self._port, timeout=self.timeout)
        with self._in_flight_lock:
            self._in_flight = conn
        try:
            conn.request(method, self._base + path, headers=dict(headers or {}))
            response = conn.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        except (OSError, http.client.HTTPException) as exc:
            raise MetadataError(_describe(exc)) from exc
        finally:
            with self._in_flight_lock:
                self._in_flight = None
            conn.close()

    def interrupt(self) -> None:
        """From another thread: make a request in flight fail now rather than at its timeout."""
        with self._in_flight_lock:
            sock = self._in_flight.sock if self._in_flight is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def token(self) -> str | None:
        """A valid token (fetched or renewed if needed), or None when IMDSv1 is in use."""
        now = self._clock()
        if self._token is not None and now < self._token_expires - min(60.0, self.token_ttl * 0.1):
            return self._token
        if now < self._v1_until:
            return None
        status, headers, body = self.request("PUT", TOKEN_PATH, {TTL_HEADER: str(self.token_ttl)})
        if status == 200 and body.strip():
            token = body.decode("ascii", "replace").strip()
            if not _TOKEN.match(token):  # never echo it: it is a credential, and hostile
                raise MetadataError(f"token request answered a malformed token ({len(body)} bytes, "
                                    "not all visible ASCII)")
            try:
                ttl = int(headers.get(TTL_HEADER.lower(), self.token_ttl))
            except ValueError:
                ttl = self.token_ttl
            self._token, self._token_expires = token, now + ttl
            self.tokens_fetched += 1
            return self._token
        if status in (403, 404, 405):
            log.debug("IMDS token request answered HTTP %s: using IMDSv1", status)
            self._token, self._v1_until = None, now + V1_RETRY_AFTER
            return None
        raise MetadataError(f"token request answered HTTP {status}")

    def get(self, path: str) -> tuple[int, bytes]:
        """GET a metadata path with the token; after a 401, once more with a new token."""
        token = self.token()
        status, _, body = self.request("GET", path, {TOKEN_HEADER: token} if token else {})
        if status == 401:
            self.unauthorized += 1
            self._token, self._v1_until = None, 0.0
            token = self.token()
            status, _, body = self.request("GET", path, {TOKEN_HEADER: token} if token else {})
        return status, body


@dataclass(frozen=True)
class MetadataHealth(Record):
    """How the watch on IMDS goes. ``reachable``: the latest round of requests succeeded."""

    reachable: bool
    last_ok: float | None  # epoch seconds of the latest successful round
    consecutive_errors: int
    last_error: str | None
    failing_since: float | None = None  # first error of the current run of errors
    checks: int = 0  # rounds done

    def describe(self) -> str:
        if self.reachable:
            return "metadata service reachable"
        if self.failing_since is None:
            return "metadata service not checked yet"
        since = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.failing_since))
        return f"metadata service unreachable since {since} ({self.consecutive_errors} errors; {self.last_error})"


class Ec2MetadataSource:
    """InterruptionSource for EC2: spot instance-action and rebalance recommendations.

    The watching thread starts on ``start()``, or on the first ``attempt_started()`` or
    ``poll()``. ``sleep`` (default: an interruptible wait) paces it; ``clock`` stamps notices
    and judges token expiry. A custom ``sleep`` should be short, for ``close()`` waits it out.
    """

    def __init__(self, endpoint: str | None = None, *, interval: float = 1.0, timeout: float = 2.0,
                 token_ttl: int = MAX_TOKEN_TTL, backoff_initial: float = 0.25, backoff_max: float = 5.0,
                 log_every: float = 60.0, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], object] | None = None) -> None:
        self.client = ImdsClient(endpoint, timeout=timeout, token_ttl=token_ttl, clock=clock)
        self.endpoint = self.client.endpoint
        self.interval = interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.log_every = log_every
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._seen: set[tuple] = set()
        self._pending: list[InterruptionNotice] = []
        self._found: list[InterruptionNotice] = []
        self._last_ok: float | None = None
        self._errors = 0
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._checks = 0
        self._last_warned: float | None = None
        self._outage_warned = False
        self._odd_notice_warned: float | None = None

    # -- InterruptionSource ----------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="runctl-ec2-metadata", daemon=True)
                self._thread.start()

    def attempt_started(self, attempt: int, now: float) -> None:
        self.start()

    def poll(self, now: float) -> InterruptionNotice | None:
        """The next notice found and not yet handed over (spot notices first), or None. Never blocks on I/O."""
        if self._thread is None:
            self.start()
        with self._lock:
            if not self._pending:
                return None
            spot = [n for n in self._pending if n.source == "spot"]
            notice = spot[0] if spot else self._pending[0]
            self._pending.remove(notice)
            return notice

    def close(self) -> None:
        """Stop the thread; a request in flight is cut short."""
        self._stop.set()
        self.client.interrupt()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.client.timeout + 1.0)

    def __enter__(self) -> Ec2MetadataSource:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- what the agent may show -------------------------------------------------------------
    @property
    def health(self) -> MetadataHealth:
        with self._lock:
            return MetadataHealth(reachable=self._checks > 0 and self._errors == 0, last_ok=self._last_ok,
                                  consecutive_errors=self._errors, last_error=self._last_error,
                                  failing_since=self._failing_since, checks=self._checks)

    @property
    def notices(self) -> tuple[InterruptionNotice, ...]:
        """Every distinct notice found so far, handed over or not."""
        with self._lock:
            return tuple(self._found)

    # -- the watching thread ---------------------------------------------------------------
    def _run(self) -> None:
        log.debug("watching EC2 metadata at %s every %.1fs", self.endpoint, self.interval)
        while not self._stop.is_set():
            try:
                ok = self.check()
            except Exception as exc:  # a bug must not end the watch silently, nor flood the log
                self._record_error(f"internal error: {exc!r}", traceback=True)
                ok = False
            if self._stop.is_set():
                break
            self._sleep(self.interval if ok else self._backoff())

    def _backoff(self) -> float:
        with self._lock:
            errors = max(1, self._errors)
        return min(self.backoff_max, self.backoff_initial * 2 ** min(errors - 1, 30))

    def check(self) -> bool:
        """One round: read both paths, queue new notices, update health. True if all went well.

        The watching thread calls it; call it yourself only on a source not started.
        """
        problems: list[str] = []
        for label, path, parse in (("instance-action", INSTANCE_ACTION_PATH, _parse_instance_action),
                                   ("rebalance", REBALANCE_PATH, _parse_rebalance)):
            try:
                status, body = self.client.get(path)
            except MetadataError as exc:
                problems.append(f"{label}: {exc}")
                break  # the service is not answering: do not wait out a second timeout
            if status == 404:
                continue
            if status != 200:
                problems.append(f"{label}: HTTP {status}")
                break
            try:
                key, notice, oddity = parse(body, self._clock())
            except ValueError as exc:
                problems.append(f"{label}: malformed answer ({exc}): {body[:100]!r}")
                continue
            if oddity:
                self._warn_odd_notice(oddity)
            self._offer(key, notice)
        if self._stop.is_set() and problems:
            return False  # cut short by close(): not an outage
        if problems:
            self._record_error("; ".join(problems))
            return False
        self._record_ok()
        return True

    def _warn_odd_notice(self, oddity: str) -> None:
        """A notice acted on despite a flaw is served again every round: warn once a minute."""
        now = self._clock()
        with self._lock:
            warn = self._odd_notice_warned is None or now - self._odd_notice_warned >= self.log_every
            if warn:
                self._odd_notice_warned = now
        log.log(logging.WARNING if warn else logging.DEBUG, "EC2 metadata: %s", oddity)

    def _offer(self, key: tuple, notice: InterruptionNotice) -> None:
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
            self._pending.append(notice)
            self._found.append(notice)
        log.info("EC2 metadata: %s", notice.detail)  # the agent reports it as an event

    def _record_ok(self) -> None:
        now = self._clock()
        with self._lock:
            errors, since, warned = self._errors, self._failing_since, self._outage_warned
            self._checks += 1
            self._last_ok = now
            self._errors, self._failing_since, self._outage_warned = 0, None, False
        if errors and warned:
            log.warning("EC2 metadata service at %s answers again, after %d failed rounds over %.1fs",
                        self.endpoint, errors, now - (since or now))

    def _record_error(self, message: str, *, traceback: bool = False) -> None:
        """Count a failed round; warn at most once a minute (with the traceback of the
        exception being handled, if ``traceback``), else log at debug level."""
        now = self._clock()
        with self._lock:
            self._checks += 1
            self._errors += 1
            self._last_error = message
            if self._errors == 1:
                self._failing_since = now
            errors, since = self._errors, self._failing_since
            warn = self._last_warned is None or now - self._last_warned >= self.log_every
            if warn:
                self._last_warned, self._outage_warned = now, True
        if not warn:
            log.debug("EC2 metadata service at %s: %s (%d in a row)", self.endpoint, message, errors)
        elif errors == 1:
            log.warning("EC2 metadata service at %s: %s; retrying with backoff", self.endpoint, message,
                        exc_info=traceback)
        else:
            log.warning("EC2 metadata service at %s failing for %.0fs (%d rounds in a row); last: %s",
                        self.endpoint, now - (since or now), errors, message, exc_info=traceback)


def _json_object(body: bytes) -> dict:
    """The JSON object ``body`` holds; ValueError for anything else, absurd nesting included."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(document, dict):
        raise ValueError(f"not a JSON object but {type(document).__name__}")
    return document


def _one_line(value: object) -> bool:
    """A field AWS fills with a short word or time: printable (no CR/LF to forge log lines) and short."""
    return isinstance(value, str) and 0 < len(value) <= 100 and value.isprintable()


def _shown(value: object) -> str:
    """``value`` for a log line, short, and without walking a deeply nested structure."""
    return repr(value[:100]) if isinstance(value, str) else "none" if value is None else f"a {type(value).__name__}"


def _parse_instance_action(body: bytes, received: float) -> tuple[tuple, InterruptionNotice, str | None]:
    """(dedup key, notice, what is odd about it or None). ValueError when there is no action.

    A notice whose time cannot be read is still a notice: the machine goes anyway, so it is
    reported without a deadline (the configured grace applies) rather than dropped."""
    document = _json_object(body)
    action = document.get("action")
    if not _one_line(action):
        raise ValueError("no action in it" if not action else "its action is not one line of text")
    when = document.get("time")
    try:
        deadline = parse_imds_time(when) if _one_line(when) else None
    except ValueError:
        deadline = None
    if deadline is None:
        oddity = (f"spot instance-action {action} with an unreadable time ({_shown(when)}): "
                  "reporting it without a deadline")
        detail = f"spot instance-action {action} (no readable time)"
        when = None  # also keeps the dedup key hashable
    else:
        oddity, detail = None, f"spot instance-action {action} at {when}"
    return ("spot", action, when), InterruptionNotice("spot", action, received, deadline, detail), oddity


def _parse_rebalance(body: bytes, received: float) -> tuple[tuple, InterruptionNotice, None]:
    notice_time = _json_object(body).get("noticeTime")
    if not _one_line(notice_time):
        raise ValueError("no noticeTime in it")
    detail = f"rebalance recommendation at {notice_time}"
    return ("rebalance", notice_time), InterruptionNotice("rebalance", "rebalance", received, None, detail), None


def detect_ec2_spot(endpoint: str | None = None, timeout: float = 0.3) -> bool | None:
    """True on an EC2 spot instance, False on another EC2 instance, None when IMDS does not answer.

    Honours ``AWS_EC2_METADATA_DISABLED=true`` (None). Takes at most about two ``timeout``s.
    """
    if os.environ.get(DISABLED_ENV, "").strip().lower() == "true":
        return None
    try:
        client = ImdsClient(endpoint, timeout=timeout, token_ttl=60)
        status, body = client.get(LIFECYCLE_PATH)
    except UsageError as exc:
        log.warning("not checking for EC2: %s", exc)
        return None
    except MetadataError as exc:
        log.debug("no EC2 metadata service at %s: %s", resolve_endpoint(endpoint), exc)
        return None
    if status != 200:
        log.debug("EC2 metadata %s answered HTTP %s", LIFECYCLE_PATH, status)
        return None
    return body.decode("ascii", "replace").strip() == "spot"


def running_on_ec2(dmi_folder: str = "/sys/devices/virtual/dmi/id") -> bool:
    """A cheap local check (no network): does the firmware say this is an EC2 instance?

    Asking IMDS on a machine that is not on EC2 can hang until a timeout, so the agent
    looks here first and asks IMDS only when this says yes.
    """
    for name in ("board_asset_tag", "sys_vendor", "product_uuid"):
        try:
            with open(os.path.join(dmi_folder, name)) as f:
                value = f.read().strip().lower()
        except OSError:
            continue
        if value.startswith("i-") or value.startswith("ec2") or "amazon ec2" in value:
            return True
    return False
