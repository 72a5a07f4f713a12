"""The Kandji API simulator: a real HTTP/1.1 server on loopback, standard library only.

Request pipeline (first match wins), mirroring a gateway in front of the API:
  1. `latency` sleep, then `delay` / `reset_connection` faults
  2. non-GET -> 405
  3. `rate_limit_burst` fault -> 429
  4. auth (incl. `revoke_token_after`) -> 401 {"detail": "Invalid token."}
  5. rate limiter -> 429 {"message": "API rate limit exceeded"} + Retry-After
     (every request reaching this step counts against the hourly budget, whatever its outcome)
  6. `fail` fault -> the injected status/body
  7. routing: unknown path -> HTML 404; endpoint not in `permissions` -> 403
  8. the endpoint, then `malformed` faults rewrite its body

Quirks of the real API it keeps: Prism pages (apps and posture categories alike) shorter than
asked with a null cursor while `total` is larger (`prism_page_rows`, `prism_cursors`), and the response
headers of each era of recorded responses (`headers_era`: 2022 none of the rate-limit headers, 2023 Kong's `via`,
2024 the rate-limit set). Its Prism tables are live: `faults.change_during_prism_read` changes the
fleet between two page requests, so rows move under a client paging by offset.

Rate limits use fixed windows, like Kong's rate-limiting plugin: the per-second window is
the current wall-clock second; the hourly window starts when the simulator is created and
lasts 3600 s. Counters are per simulator (= per tenant).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
import socket
import struct
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import prism_categories
from .fleet import Fleet
from .params import BadRequest, int_param
from .raw_values import RawValues
from .tenant import PATHS as TENANT_PATHS
from .tenant import Tenant

JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"

MAX_LIMIT = 300  # the API's page-size ceiling (and default)
# Prism serves pages shorter than asked, with a null cursor, while `total` is larger (a real
# recorded page: limit 25, 25 rows, total 165, cursor null). Clients must page until `total`.
PRISM_PAGE_ROWS = 100

# Response headers by era of the recorded responses: 2022 had no rate-limit headers but
# x-total-count and a Python-ish `link: <None>; rel="next"`; 2023 went through Kong; 2024 has
# the ratelimit-* and x-ratelimit-*-hour/-second set.
HEADER_ERAS = ("2022", "2023", "2024")

# Permission names a token can hold, one per endpoint family.
PERMISSIONS = frozenset({"devices", "details", "apps", "prism"}) | prism_categories.PERMISSIONS
# Tenant-wide sources (simulator/tenant.py): one permission per endpoint, as Kandji grants them.
TENANT_PERMISSIONS = frozenset(TENANT_PATHS)
PERMISSIONS = PERMISSIONS | TENANT_PERMISSIONS

# Django's production 404 page: what the API answers for unknown paths and unknown devices.
NOT_FOUND_HTML = (
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n'
    "  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n"
    "</body>\n</html>\n"
).encode()
MAINTENANCE_HTML = (
    "<!doctype html>\n<html><head><title>Kandji - Maintenance</title></head>\n"
    "<body><h1>We'll be right back</h1><p>Scheduled maintenance in progress.</p></body></html>\n"
).encode()
NOT_JSON_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"

# path regex -> (stats endpoint name, permission name)
_ROUTES = (
    (re.compile(r"^/api/v1/devices/?$"), "devices", "devices"),
    (re.compile(r"^/api/v1/devices/(?P<device_id>[^/]+)/details/?$"), "details", "details"),
    (re.compile(r"^/api/v1/devices/(?P<device_id>[^/]+)/apps/?$"), "apps", "apps"),
    (re.compile(r"^/api/v1/prism/apps/?$"), "prism_apps", "prism"),
    (re.compile(r"^/api/v1/prism/count/?$"), "prism_count", "prism"),
    # Tenant-wide sources (simulator/tenant.py): each its own stats name and permission.
    *((re.compile(rf"^/api/v1/{re.escape(path)}/?$"), source, source) for source, path in TENANT_PATHS.items()),
    # FileVault key, bypass code, unlock PIN, recovery password: a collector must never ask.
    # No token here holds the permission, so these answer 403 (and show in stats).
    (re.compile(r"^/api/v1/devices/(?P<device_id>[^/]+)/secrets/.*$"), "secrets", "secrets"),
    # Posture categories (simulator/prism_categories.py): each its own permission, set in _route.
    (re.compile(r"^/api/v1/prism/(?P<category>[^/]+)/?$"), "prism_category", None),
)

# Filters /devices understands: query name -> how to read it from a list item.
_DEVICE_FILTERS = {
    "platform": lambda it: it.get("platform"),
    "serial_number": lambda it: it.get("serial_number"),
    "device_id": lambda it: it.get("device_id"),
    "device_name": lambda it: it.get("device_name"),
    "blueprint_id": lambda it: it.get("blueprint_id"),
    "user_email": lambda it: it["user"].get("email") if isinstance(it.get("user"), dict) else None,
}
_ORDERING_FIELDS = ("serial_number", "device_id", "device_name")


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    incomplete: bool = False  # announce the full Content-Length, send half, close


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj).encode(), JSON_TYPE, dict(headers or {}))


def _not_found() -> Response:
    return Response(404, NOT_FOUND_HTML, HTML_TYPE)


_BadRequest = BadRequest  # raised by the endpoints, answered 400


# ---------------------------------------------------------------------------- faults
@dataclass
class _Fault:
    kind: str
    pattern: re.Pattern | None  # None: matches every request
    times: int | None  # None: forever
    params: dict[str, Any]


class Faults:
    """Injected misbehaviour. Each fault is consumed by the requests it matches.

    `path_regex` is searched (re.search) in the request path and also in path + "?" + query,
    so r"/devices$" targets the list endpoint and r"offset=300" one page of it.
    `times=None` makes a fault permanent until `clear()`.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: _due_prism_change reads the count its _take left
        self._faults: list[_Fault] = []
        self._revoke_after: int | None = None
        self._unenrolled: set[str] = set()

    def _add(self, fault_kind: str, path_regex: str | None, times: int | None, **params: Any) -> None:
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 (or None for forever)")
        pattern = re.compile(path_regex) if path_regex is not None else None
        with self._lock:
            self._faults.append(_Fault(fault_kind, pattern, times, params))

    def fail(self, path_regex: str, status: int = 500, times: int | None = 1, body: Any = None,
             headers: dict[str, str] | None = None, content_type: str | None = None) -> None:
        """Answer `status` with `body`: dict/list/None are sent as JSON (None -> {"detail":
        <reason phrase>}); str/bytes are sent verbatim, typed JSON if they parse as JSON
        else text/plain, unless `content_type` is given."""
        if body is None or isinstance(body, (dict, list)):
            payload = json.dumps(body if body is not None else {"detail": HTTPStatus(status).phrase}).encode()
            default_type = JSON_TYPE
        else:
            payload = body.encode() if isinstance(body, str) else bytes(body)
            try:
                json.loads(payload)
                default_type = JSON_TYPE
            except ValueError:
                default_type = "text/plain; charset=utf-8"
        response = Response(status, payload, content_type or default_type, dict(headers or {}))
        self._add("fail", path_regex, times, response=response)

    def rate_limit_burst(self, times: int | None = 1, retry_after: int | None = 1,
                         reset: int | None = None, path_regex: str | None = None) -> None:
        """The next `times` requests answer 429; Retry-After / ratelimit-reset headers are sent
        only when given (None: left out, so a client must fall back to its own backoff)."""
        self._add("burst", path_regex, times, retry_after=retry_after, reset=reset)

    def revoke_token_after(self, n_requests: int) -> None:
        """Serve the next `n_requests` normally, then answer every request 401."""
        with self._lock:
            self._revoke_after = max(0, n_requests)

    def restore_token(self) -> None:
        with self._lock:
            self._revoke_after = None

    def unenroll_during_run(self, device_id: str) -> None:
        """The device stays in /devices but its details/apps answer HTML 404 (until clear())."""
        with self._lock:
            self._unenrolled.add(device_id)

    def malformed(self, path_regex: str, times: int | None = 1, kind: str = "truncated") -> None:
        """200 with a broken body. kind: "truncated" (first half of the real JSON, consistent
        Content-Length), "not_json" (plain text typed application/json), "html" (a maintenance
        page), "incomplete" (full Content-Length announced, half sent, connection closed)."""
        if kind not in ("truncated", "not_json", "html", "incomplete"):
            raise ValueError(f"unknown malformed kind {kind!r}")
        self._add("malformed", path_regex, times, kind=kind)

    def repeat_prism_page(self, times: int | None = None, path_regex: str | None = None) -> None:
        """Every Prism page (/prism/apps and the categories, or those `path_regex` matches) is its
        table's first page whatever offset or cursor is asked (a server repeating itself);
        permanent unless `times` is given."""
        self._add("prism_repeat", path_regex, times)

    def change_during_prism_read(self, change: Callable[[], Any], *, before_page: int = 2,
                                 path_regex: str | None = None) -> None:
        """Run `change` once, just before the `before_page`-th Prism page request (counted from now,
        among those `path_regex` matches) is answered: a live tenant's table shifting under a client
        that pages it, e.g. `lambda: fleet.remove(device_id)` (every row of that device goes) or
        `fleet.install_app(...)` on a device whose rows were already read (one row more before the offset)."""
        if before_page < 1:
            raise ValueError("before_page must be >= 1")
        self._add("prism_change", path_regex, before_page, change=change)  # made when its count runs out

    def repeat_page(self, times: int | None = 1) -> None:
        """The next /devices request with offset > 0 gets the previous page (offset - limit)."""
        self._add("repeat_page", None, times)

    def reset_connection(self, path_regex: str, times: int | None = 1) -> None:
        """Close the socket (with RST) without sending any response."""
        self._add("reset", path_regex, times)

    def delay(self, path_regex: str, seconds: float, times: int | None = 1) -> None:
        """Sleep `seconds` before answering (to trigger client read timeouts)."""
        self._add("delay", path_regex, times, seconds=seconds)

    def clear(self) -> None:
        """Drop every fault, restore the token, re-enrol 'unenrolled' devices."""
        with self._lock:
            self._faults.clear()
            self._revoke_after = None
            self._unenrolled.clear()

    def pending(self, kind: str | None = None) -> int:
        """How many consumable fault uses are left (a permanent fault counts as 1)."""
        with self._lock:
            return sum(f.times or 1 for f in self._faults if kind is None or f.kind == kind)

    # -- used by the server
    def _take(self, kind: str, path: str, target: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind != kind:
                    continue
                if fault.pattern is not None and not (fault.pattern.search(path) or fault.pattern.search(target)):
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _due_prism_change(self, path: str, target: str) -> Callable[[], Any] | None:
        """The change to make before this Prism page is answered, if one is due (counted per matching request)."""
        with self._lock:
            fault = self._take("prism_change", path, target)
            return fault.params["change"] if fault is not None and fault.times == 0 else None

    def _token_revoked(self) -> bool:
        with self._lock:
            if self._revoke_after is None:
                return False
            if self._revoke_after == 0:
                return True
            self._revoke_after -= 1
            return False

    def _is_unenrolled(self, device_id: str) -> bool:
        with self._lock:
            return device_id in self._unenrolled


# ---------------------------------------------------------------------------- stats
class Stats:
    """Thread-safe request counters. Read attributes directly, or `snapshot()` for a copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_endpoint: Counter[str] = Counter()  # devices/details/apps/prism_apps/prism_count/other
            self.status_counts: Counter[int] = Counter()  # 0 = connection reset, no response
            self.rate_limited = 0  # 429s served (real and injected)
            self.max_requests_in_any_second = 0  # sliding 1 s window over arrival times
            self.request_log: list[tuple[float, str, str, str, int]] = []  # (time, method, path, query, status)
            self.tokens_seen: set[str] = set()  # raw Authorization header values
            self.connections_opened = 0  # TCP connections accepted (keep-alive check)
            self._recent: deque[float] = deque()

    def _connected(self) -> None:
        with self._lock:
            self.connections_opened += 1

    def _arrived(self, endpoint: str, authorization: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            self.by_endpoint[endpoint] += 1
            if authorization is not None:
                self.tokens_seen.add(authorization)
            self._recent.append(now)
            while self._recent[0] <= now - 1.0:
                self._recent.popleft()
            self.max_requests_in_any_second = max(self.max_requests_in_any_second, len(self._recent))

    def _finished(self, arrived: float, method: str, path: str, query: str, status: int) -> None:
        with self._lock:
            self.status_counts[status] += 1
            if status == 429:
                self.rate_limited += 1
            self.request_log.append((arrived, method, path, query, status))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "by_endpoint": dict(self.by_endpoint),
                "status_counts": dict(self.status_counts),
                "rate_limited": self.rate_limited,
                "max_requests_in_any_second": self.max_requests_in_any_second,
                "request_log": list(self.request_log),
                "tokens_seen": set(self.tokens_seen),
                "connections_opened": self.connections_opened,
            }

    def __getitem__(self, key: str) -> Any:  # stats["requests"] works too
        if key.startswith("_"):
            raise KeyError(key)
        return getattr(self, key)


# ---------------------------------------------------------------------------- rate limiting
class _RateLimiter:
    """Fixed-window counters: the wall-clock second, and an hour starting at creation."""

    HOUR = 3600.0

    def __init__(self, per_second: int | None, per_hour: int | None):
        self.per_second = per_second
        self.per_hour = per_hour
        self._lock = threading.Lock()
        self._second = 0
        self._second_used = 0
        self._hour_start = time.monotonic()
        self._hour_used = 0

    def _roll(self) -> tuple[float, float]:
        wall, mono = time.time(), time.monotonic()
        if int(wall) != self._second:
            self._second, self._second_used = int(wall), 0
        elapsed = mono - self._hour_start
        if elapsed >= self.HOUR:
            self._hour_start += (elapsed // self.HOUR) * self.HOUR
            self._hour_used = 0
        return wall, mono

    def acquire(self) -> tuple[int | None, dict[str, str]]:
        """Count one request. Returns (Retry-After seconds if refused else None, headers)."""
        with self._lock:
            wall, mono = self._roll()
            retry_after = None
            if self.per_hour is not None and self._hour_used >= self.per_hour:
                retry_after = max(1, math.ceil(self._hour_start + self.HOUR - mono))
            elif self.per_second is not None and self._second_used >= self.per_second:
                retry_after = max(1, math.ceil(self._second + 1 - wall))
            else:
                self._second_used += 1
                self._hour_used += 1
            return retry_after, self._headers(wall, mono)

    def peek(self) -> dict[str, str]:
        with self._lock:
            return self._headers(*self._roll())

    def _headers(self, wall: float, mono: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        windows = []  # (remaining, limit, reset)
        if self.per_hour is not None:
            remaining = max(0, self.per_hour - self._hour_used)
            headers["x-ratelimit-limit-hour"] = str(self.per_hour)
            headers["x-ratelimit-remaining-hour"] = str(remaining)
            windows.append((remaining, self.per_hour, max(1, math.ceil(self._hour_start + self.HOUR - mono))))
        if self.per_second is not None:
            remaining = max(0, self.per_second - self._second_used)
            headers["x-ratelimit-limit-second"] = str(self.per_second)
            headers["x-ratelimit-remaining-second"] = str(remaining)
            windows.append((remaining, self.per_second, max(1, math.ceil(self._second + 1 - wall))))
        if windows:  # the generic headers describe the window closest to exhaustion
            remaining, limit, reset = min(windows, key=lambda w: w[0])
            headers["ratelimit-limit"] = str(limit)
            headers["ratelimit-remaining"] = str(remaining)
            headers["ratelimit-reset"] = str(reset)
        return headers

    @property
    def hour_used(self) -> int:
        with self._lock:
            self._roll()
            return self._hour_used

    @hour_used.setter
    def hour_used(self, value: int) -> None:
        with self._lock:
            self._roll()
            self._hour_used = max(0, int(value))


# ---------------------------------------------------------------------------- HTTP plumbing
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for pooled clients; every response has Content-Length
    server_version = "KandjiSimulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no per-request logging
        pass

    def _dispatch(self) -> None:
        self.server.sim._handle(self)  # type: ignore[attr-defined]

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a burst of new connections must not hit a tiny listen backlog

    def __init__(self, address: tuple[str, int], sim: "KandjiSimulator"):
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        self.sim.stats._connected()
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Stop idle keep-alive connections, so a stopped simulator really stops answering."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # clients hanging up (timeouts, resets) are expected here
        super().handle_error(request, client_address)


# ---------------------------------------------------------------------------- the simulator
class _LimiterKnob:
    """A simulator attribute that reads and writes one attribute of its rate limiter."""

    def __init__(self, name: str, doc: str | None = None):
        self._name = name
        self.__doc__ = doc

    def __get__(self, simulator: Any, owner: type | None = None) -> Any:
        return self if simulator is None else getattr(simulator._limiter, self._name)

    def __set__(self, simulator: Any, value: int | None) -> None:
        setattr(simulator._limiter, self._name, value)


class KandjiSimulator:
    """A Kandji tenant on 127.0.0.1. Use as a context manager or call start()/stop()."""

    def __init__(self, fleet: Fleet, token: str = "sim-token", *, host: str = "127.0.0.1",
                 port: int = 0, permissions=None, rate_limit_per_second: int | None = None,
                 rate_limit_per_hour: int | None = 10000, latency: float = 0.0,
                 send_rate_limit_headers: bool = True, headers_era: str = "2024",
                 prism_page_rows: int = PRISM_PAGE_ROWS, prism_cursors: bool = False):
        self.fleet = fleet
        self.token = token  # may be changed while running (token rotation)
        self.host = host
        self.port = port  # the real port once started
        self.permissions = set(PERMISSIONS if permissions is None else permissions)
        if not self.permissions <= PERMISSIONS:
            raise ValueError(f"permissions must be among {sorted(PERMISSIONS)}")
        self.latency = latency
        self.send_rate_limit_headers = send_rate_limit_headers
        if headers_era not in HEADER_ERAS:
            raise ValueError(f"headers_era must be one of {HEADER_ERAS}")
        self.headers_era = headers_era
        # Every Prism table's paging (apps and categories); attributes, so a test may change them while running.
        self.prism_page_rows = prism_page_rows  # rows per Prism page at most, whatever the limit
        self.prism_cursors = prism_cursors  # False: cursor always null (as recorded); True: opaque cursors
        self.faults = Faults()
        self.raw_values = RawValues()  # tests: raw values and reordered lists in served payloads
        self.stats = Stats()
        self.prism = prism_categories.PrismCategories(fleet)  # posture categories: rows and `set`
        self.tenant = Tenant(fleet)  # audit trail, threats, vulnerabilities, users, blueprints
        self._limiter = _RateLimiter(rate_limit_per_second, rate_limit_per_hour)
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> "KandjiSimulator":
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = _HTTPServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"kandji-sim-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "KandjiSimulator":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/v1/"

    # -- knobs: the rate limiter's settings, which tests may turn while the simulator runs
    rate_limit_per_second = _LimiterKnob("per_second")
    rate_limit_per_hour = _LimiterKnob("per_hour")
    hour_used = _LimiterKnob("hour_used", "Requests counted in the current hour window; set it to simulate other "
                                          "integrations.")

    @property
    def hour_remaining(self) -> int | None:
        per_hour = self._limiter.per_hour
        return None if per_hour is None else max(0, per_hour - self.hour_used)

    @property
    def tokens_seen(self) -> set[str]:
        """Every raw Authorization header value received (e.g. {"Bearer sim-token"})."""
        with self.stats._lock:
            return set(self.stats.tokens_seen)

    def reset_stats(self) -> None:
        self.stats.reset()

    # -- request handling
    def _handle(self, h: _Handler) -> None:
        arrived = time.time()
        method = h.command
        split = urlsplit(h.path)
        path, query, target = split.path, split.query, h.path
        endpoint, permission, route_params = self._route(path)
        self.stats._arrived(endpoint or "other", h.headers.get("Authorization"))
        length = h.headers.get("Content-Length")
        if length and length.isdigit():  # drain a request body so keep-alive stays in sync
            h.rfile.read(int(length))
        response = None
        try:
            if self.latency > 0:
                time.sleep(self.latency)
            delay = self.faults._take("delay", path, target)
            if delay is not None:
                time.sleep(delay.params["seconds"])
            if self.faults._take("reset", path, target) is not None:
                self._reset(h)
                return
            try:
                response = self._respond(method, path, query, target, endpoint, permission, route_params,
                                         h.headers.get("Authorization"))
            except Exception as exc:  # a simulator bug: answer 500 rather than hang the client
                traceback.print_exc()
                response = _json(500, {"detail": f"simulator error: {exc!r}"})
        finally:
            # Counted before it is written: whoever has the answer in hand finds it in the stats.
            self.stats._finished(arrived, method, path, query, 0 if response is None else response.status)
        self._write(h, response, head_only=method == "HEAD")

    @staticmethod
    def _route(path: str) -> tuple[str | None, str | None, dict[str, str]]:
        for pattern, endpoint, permission in _ROUTES:
            match = pattern.match(path)
            if match:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                if endpoint == "prism_category":  # per-category stats and permission; unknown: 400, not 403
                    category = params["category"]
                    known = category in prism_categories.CATEGORIES or category in prism_categories.OTHER_CATEGORIES
                    return (f"prism_{category}" if known else "prism_category",
                            prism_categories.permission_for(category) if known else None, params)
                return endpoint, permission, params
        return None, None, {}

    @staticmethod
    def _reset(h: _Handler) -> None:
        h.close_connection = True
        try:  # linger 0: close() sends RST instead of a clean FIN
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    @staticmethod
    def _write(h: _Handler, response: Response, head_only: bool) -> None:
        try:
            h.send_response(response.status)
            h.send_header("Content-Type", response.content_type)
            h.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                h.send_header(name, value)
            h.end_headers()
            if head_only:
                return
            if response.incomplete:
                h.wfile.write(response.body[: len(response.body) // 2])
                h.close_connection = True  # the client sees EOF before Content-Length bytes
            else:
                h.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. read timeout)
            h.close_connection = True

    def _authorized(self, authorization: str | None) -> bool:
        if self.faults._token_revoked():
            return False
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and value.strip() == self.token

    def _limit_headers(self, headers: dict[str, str]) -> dict[str, str]:
        if self.headers_era == "2022":
            return {"link": '<None>; rel="next"'}  # and x-total-count on the device list
        if self.headers_era == "2023":
            return {"via": "kong/2.7.2"}
        return headers if self.send_rate_limit_headers else {}

    def _respond(self, method: str, path: str, query: str, target: str, endpoint: str | None,
                 permission: str | None, route_params: dict[str, str],
                 authorization: str | None) -> Response:
        if method != "GET":
            return _json(405, {"detail": f'Method "{method}" not allowed.'}, {"Allow": "GET"})

        burst = self.faults._take("burst", path, target)
        if burst is not None:
            headers = self._limit_headers(self._limiter.peek())
            headers.pop("ratelimit-reset", None)
            if headers:
                headers["ratelimit-remaining"] = "0"
            if burst.params["reset"] is not None:
                headers["ratelimit-reset"] = str(burst.params["reset"])
            if burst.params["retry_after"] is not None:
                headers["Retry-After"] = str(burst.params["retry_after"])
            return _json(429, {"message": "API rate limit exceeded"}, headers)

        if not self._authorized(authorization):
            headers = self._limit_headers(self._limiter.peek())
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
            return _json(401, {"detail": "Invalid token."}, headers)

        retry_after, limit_headers = self._limiter.acquire()
        limit_headers = self._limit_headers(limit_headers)
        if retry_after is not None:
            return _json(429, {"message": "API rate limit exceeded"},
                         {**limit_headers, "Retry-After": str(retry_after)})

        response = self._serve_endpoint(path, query, target, endpoint, permission, route_params)
        response.headers = {**limit_headers, **response.headers}
        return response

    def _serve_endpoint(self, path: str, query: str, target: str, endpoint: str | None,
                        permission: str | None, route_params: dict[str, str]) -> Response:
        failure = self.faults._take("fail", path, target)
        if failure is not None:
            injected: Response = failure.params["response"]
            return replace(injected, headers=dict(injected.headers))
        if endpoint is None:
            return _not_found()
        if permission is not None and permission not in self.permissions:
            if not self.permissions:  # a token stripped of every permission answers 401, not 403
                return _json(401, {"detail": "Invalid token."})
            return _json(403, {"detail": "You do not have permission to perform this action."})
        malformed = self.faults._take("malformed", path, target)
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            if endpoint in TENANT_PERMISSIONS:  # simulator/tenant.py: one permission and stats name per endpoint
                response = self._ep_tenant(endpoint, params)
            else:
                handler = "_ep_prism_category" if "category" in route_params else f"_ep_{endpoint}"
                response = getattr(self, handler)(params, path, target, **route_params)
        except _BadRequest as bad:
            response = _json(400, bad.body)
        if malformed is not None:
            response = self._malform(response, malformed.params["kind"])
        return response

    @staticmethod
    def _malform(response: Response, kind: str) -> Response:
        if kind == "truncated":
            # Half of a JSON object/array is never valid JSON (its brackets cannot balance).
            return Response(200, response.body[: max(1, len(response.body) // 2)], JSON_TYPE)
        if kind == "incomplete":
            return Response(200, response.body, JSON_TYPE, incomplete=True)
        if kind == "not_json":
            return Response(200, NOT_JSON_BODY, JSON_TYPE)
        return Response(200, MAINTENANCE_HTML, HTML_TYPE)

    # -- endpoints
    _int_param = staticmethod(int_param)

    def _ep_devices(self, params: dict[str, str], path: str, target: str) -> Response:
        limit = min(self._int_param(params, "limit", MAX_LIMIT, 1), MAX_LIMIT)
        offset = self._int_param(params, "offset", 0, 0)
        ordering = params.get("ordering") or None
        if ordering and ordering.lstrip("-") not in _ORDERING_FIELDS:
            ordering = None  # like Django REST framework: unknown ordering fields are ignored
        if offset > 0 and self.faults._take("repeat_page", path, target) is not None:
            offset = max(0, offset - limit)
        items = self.fleet._ordered(ordering)
        filters = [(get, params[name]) for name, get in _DEVICE_FILTERS.items() if name in params]
        if "tag_name" in params:
            tag = params["tag_name"]
            filters.append((lambda it: tag if tag in (it.get("tags") or []) else None, tag))
        if filters:
            items = [it for it in items if all(get(it) == wanted for get, wanted in filters)]
        page = [self.raw_values.apply("list_item", it["device_id"], it) for it in items[offset:offset + limit]]
        headers = {"x-total-count": str(len(items))} if self.headers_era == "2022" else {}
        return _json(200, page, headers)

    def _ep_details(self, params: dict[str, str], path: str, target: str, device_id: str) -> Response:
        if self.faults._is_unenrolled(device_id):
            return _not_found()
        try:
            return _json(200, self.raw_values.apply("details", device_id, self.fleet.details(device_id)))
        except KeyError:
            return _not_found()

    def _ep_apps(self, params: dict[str, str], path: str, target: str, device_id: str) -> Response:
        if self.faults._is_unenrolled(device_id):
            return _not_found()
        try:
            apps = self.raw_values.apply("apps", device_id, self.fleet.apps(device_id))
            return _json(200, {"device_id": device_id, "apps": apps})
        except KeyError:
            return _not_found()

    def _ep_prism_apps(self, params: dict[str, str], path: str, target: str) -> Response:
        return self._prism_page(params, path, target, self.fleet._prism_page)

    def _ep_prism_category(self, params: dict[str, str], path: str, target: str, category: str) -> Response:
        try:
            self.prism.rows(category)
        except prism_categories.InvalidCategory:
            raise _BadRequest({"detail": f"Invalid category: {category}"}) from None

        def rows_at(offset: int, limit: int) -> tuple[list[dict], int]:
            rows = self.prism.rows(category)  # read after a due change is made (cached until the fleet changes)
            return rows[offset:offset + limit], len(rows)

        return self._prism_page(params, path, target, rows_at)

    def _prism_page(self, params: dict[str, str], path: str, target: str,
                    rows_at: Callable[[int, int], tuple[list[dict], int]]) -> Response:
        """One page of a Prism table, `rows_at(offset, limit)` -> (rows, total), in the real envelope:
        at most `prism_page_rows` rows whatever the limit, a cursor only with `prism_cursors` (else
        null, even mid-table), and the offset echoed only when one was asked for."""
        limit = min(self._int_param(params, "limit", MAX_LIMIT, 1), MAX_LIMIT, self.prism_page_rows)
        offset = decode_cursor(params["cursor"]) if params.get("cursor") else self._int_param(params, "offset", 0, 0)
        change = self.faults._due_prism_change(path, target)
        if change is not None:
            change()  # the table shifts between two page requests, as a live tenant's does
        if self.faults._take("prism_repeat", path, target) is not None:
            offset = 0
        rows, total = rows_at(offset, limit)
        following = offset + len(rows)
        cursor = encode_cursor(following) if self.prism_cursors and rows and following < total else None
        echoed = offset if "offset" in params or "cursor" in params else None  # null when not asked
        return _json(200, {"offset": echoed, "limit": limit, "total": total, "data": rows, "cursor": cursor})

    def _ep_tenant(self, endpoint: str, params: dict[str, str]) -> Response:
        status, body = self.tenant.page(endpoint, params, self.base_url)
        return Response(status, body, JSON_TYPE)

    def _ep_prism_count(self, params: dict[str, str], path: str, target: str) -> Response:
        category = params.get("category", "")
        if category == "apps":
            return _json(200, {"count": self.fleet.prism_app_total(), "approximate": False})
        if category in ("devices", "device_information"):
            return _json(200, {"count": len(self.fleet), "approximate": False})
        raise _BadRequest({"category": [f'"{category}" is not a valid choice.']})


def encode_cursor(offset: int) -> str:
    """Prism cursors are opaque to clients; here, base64 of a small JSON document."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError
        return offset
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _BadRequest({"detail": "Invalid cursor."}) from None
