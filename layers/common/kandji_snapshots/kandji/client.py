"""The Kandji HTTP adapter: the only module that talks to the API.

It sends every request (paced through one shared `RateLimiter`, never redirected, only to the
validated host), retries what is worth retrying (429, 5xx, connection errors, garbled bodies),
gives up before the run's deadline, and turns every other answer into an error that says what to
fix (status_advice.py). How lists are paged, and what that costs, is paging.py's.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from kandji_snapshots.errors import (
    ConfigurationError,
    DeadlineExceeded,
    KandjiApiError,
    MalformedResponse,
    RateLimitExhausted,
)
from kandji_snapshots.kandji.config import ApiEndpoint, KandjiCredentials, path_segment
from kandji_snapshots.kandji.paging import (
    DeviceListMoved,
    DeviceListPaginator,
    NextUrlPaginator,
    PageRepeated,
    Paginator,
    PrismPaginator,
)
from kandji_snapshots.kandji.permissions import permission_for
from kandji_snapshots.kandji.rate_limiter import RateLimiter
from kandji_snapshots.kandji.status_advice import DEVICE_GONE, advice_for

logger = logging.getLogger(__name__)

STORE_IN_THE_SECRET = "store it in the Kandji secret"  # where a new token goes, in the collector's errors


@dataclass
class RequestStats:
    """Counters of one run, shared by all workers."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)
    remaining_hour: int | None = None  # x-ratelimit-remaining-hour, when the API sends it
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self, endpoint: str) -> None:
        with self._lock:
            self.requests += 1
            self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self.requests,
                "retries": self.retries,
                "rate_limited": self.rate_limited,
                "server_errors": self.server_errors,
                "by_endpoint": dict(sorted(self.by_endpoint.items())),
                "remaining_hour": self.remaining_hour,
            }


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8  # per request, for 5xx / connection errors / garbled bodies
    max_rate_limited_attempts: int = 30  # 429s are expected under load: be patient, within the deadline
    base_backoff: float = 0.5
    max_backoff: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None, rate_limited: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait
        self.rate_limited = rate_limited


class Budget(Protocol):
    """The run's request budget (collect/refresh.RequestBudget): one request taken before each is sent."""

    def take(self) -> None: ...  # raises when the budget is spent

    def observe_remaining_hour(self, remaining: int) -> None: ...  # the tenant's x-ratelimit-remaining-hour


class KandjiClient:
    def __init__(self, credentials: KandjiCredentials, *, limiter: RateLimiter,
                 session: requests.Session | None = None, deadline: float | None = None,
                 retry: RetryPolicy = RetryPolicy(), stats: RequestStats | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 pool_size: int = 16, budget: Budget | None = None):
        self._endpoint = credentials.endpoint
        self.host = credentials.endpoint.host
        self._token = credentials.token
        self._limiter = limiter
        self._budget = budget
        self._deadline = deadline
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self.stats = stats or RequestStats()
        self._session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        only_the_api_host(self._session, self._endpoint, adapter)

    # -- endpoints ---------------------------------------------------------

    def list_devices(self) -> list[dict[str, Any]]:
        """Every device of the tenant (paging: DeviceListPaginator), read again from the start when
        devices are removed while the list is read."""
        for attempt in range(1, self._retry.max_attempts + 1):
            try:
                return list(self._paged("devices", "devices", DeviceListPaginator(self._retry.max_attempts),
                                        expect=list))
            except DeviceListMoved:
                self.stats.count("retries")
                logger.warning("the device list changed while it was read (a device was removed): reading it again",
                               extra={"attempt": attempt})
        raise KandjiApiError(
            f"GET /api/v1/devices: the device list changed while it was read, {self._retry.max_attempts} times "
            "in a row (devices removed between two pages), so no complete list could be taken. Nothing was "
            "committed; the next scheduled run will try again.", endpoint="devices")

    def device_details(self, device_id: str) -> dict[str, Any]:
        return self._get("details", f"devices/{path_segment(device_id)}/details", None, expect=dict,
                         device_id=device_id)

    def device_apps(self, device_id: str) -> list[dict[str, Any]]:
        body = self._get("apps", f"devices/{path_segment(device_id)}/apps", None, expect=dict, device_id=device_id)
        apps = body.get("apps")
        if apps is None:
            apps = []
        if not isinstance(apps, list) or not all(isinstance(app, dict) for app in apps):
            raise MalformedResponse(f"GET /api/v1/devices/{device_id}/apps returned 'apps' that is not a "
                                    "list of objects.", endpoint="apps")
        return apps

    def prism_apps(self) -> Iterator[dict[str, Any]]:
        """Fleet-wide app rows from Prism (`GET /prism/apps`), every one of them or an error."""
        return self._prism_rows("prism", "prism/apps")

    def iter_prism_category(self, category: str) -> Iterator[dict[str, Any]]:
        """Every row of one Prism category (`GET /prism/<category>`), or an error.

        401/403 raise KandjiAuthError (endpoint `prism_<category>`); an unknown category answers
        400 (KandjiApiError, status 400).
        """
        if not re.fullmatch(r"[a-z][a-z_]*", category):
            raise ValueError(f"not a Prism category name: {category!r}")
        return self._prism_rows(f"prism_{category}", f"prism/{category}")

    def read_list(self, endpoint: str, path: str, paginator: Paginator) -> Iterator[dict[str, Any]]:
        """Every row of a tenant-wide list (collect/tenant_sources.py), paged by `paginator`, or an error."""
        return self._paged(endpoint, path, paginator, expect=dict)

    def audit_events(self, start_date: str) -> Iterator[dict[str, Any]]:
        """The audit trail from `start_date` on, oldest first, 500 a page (the most the API serves)."""
        first = {"limit": 500, "sort_by": "occurred_at", "start_date": start_date}
        return self.read_list("audit_events", "audit/events",
                              NextUrlPaginator("audit_events", "audit/events", self.host, first))

    def _prism_rows(self, endpoint: str, path: str) -> Iterator[dict[str, Any]]:
        """Every row of a Prism table (paging: PrismPaginator), or an error."""
        return self._paged(endpoint, path, PrismPaginator(endpoint, path), expect=dict)

    def _paged(self, endpoint: str, path: str, paginator: Paginator, *,
               expect: type) -> Iterator[dict[str, Any]]:
        """The rows of every page `paginator` asks for; a page it finds repeated is asked again after a back-off."""
        while (params := paginator.next_request()) is not None:
            try:
                rows = paginator.update(self._get(endpoint, path, params, expect=expect))
            except PageRepeated as repeated:
                self.stats.count("retries")
                self._backoff(repeated.attempt, None, reason=repeated.reason)
                continue
            yield from rows

    # -- transport ---------------------------------------------------------

    def _get(self, endpoint: str, path: str, params: dict[str, Any] | None, *, expect: type,
             device_id: str | None = None) -> Any:
        attempts = rate_limited_attempts = 0
        while True:
            try:
                return self._attempt(endpoint, path, params, expect, device_id)
            except _Retry as retry:
                if retry.rate_limited:
                    rate_limited_attempts += 1
                    exhausted = rate_limited_attempts >= self._retry.max_rate_limited_attempts
                else:
                    attempts += 1
                    exhausted = attempts >= self._retry.max_attempts
                if exhausted and retry.rate_limited:
                    raise RateLimitExhausted(
                        f"GET /api/v1/{path} kept answering 429 (rate limited) after "
                        f"{rate_limited_attempts} tries: the tenant's rate limit is spent, possibly by other "
                        "integrations. Nothing was committed; the next scheduled run will try again.") from None
                if exhausted:
                    cause = f"GET /api/v1/{path} failed after retries: {retry.reason}"
                    raise KandjiApiError(f"{cause}. Nothing was committed; the next scheduled run will try again.",
                                         endpoint=endpoint, cause=cause) from None
                self.stats.count("retries")
                logger.warning("retrying Kandji request", extra={"endpoint": endpoint, "reason": retry.reason})
                if retry.rate_limited:
                    wait = retry.wait if retry.wait is not None else self._backoff_delay(rate_limited_attempts)
                    self._check_deadline(wait, retry.reason, error=RateLimitExhausted)
                    self._limiter.pause(wait)
                else:
                    self._backoff(attempts, retry.wait, reason=retry.reason)

    def send(self, endpoint: str, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        """One GET, paced and counted, never redirected and never retried: the transport under every
        endpoint, and what the CLI's `check` probes with. Raises requests' exceptions as they come."""
        if self._budget is not None:
            self._budget.take()  # raises BudgetExhausted rather than overspend
        self._limiter.acquire(self._deadline)
        self.stats.count_request(endpoint)
        response = self._session.get(
            self._endpoint.url(path),
            params=params,
            headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
            timeout=(self._retry.connect_timeout, self._read_timeout()),
            allow_redirects=False,  # a redirect could carry the token to another host
        )
        self._observe_headers(response.headers)
        return response

    def _attempt(self, endpoint: str, path: str, params: dict[str, Any] | None, expect: type,
                 device_id: str | None) -> Any:
        try:
            response = self.send(endpoint, path, params)
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as error:
            raise _Retry(f"a response from {self.host} that broke off or could not be decoded "
                         f"({type(error).__name__})") from None
        except requests.exceptions.RequestException as error:
            raise _Retry(f"{type(error).__name__} talking to {self.host}") from None
        status = response.status_code
        where = f"GET /api/v1/{path}"
        if status == 429:
            self.stats.count("rate_limited")
            raise _Retry("429 rate limited", wait=rate_limit_wait(response.headers), rate_limited=True)
        if status >= 500:
            self.stats.count("server_errors")
            raise _Retry(f"{status} from the Kandji API", wait=_retry_after(response.headers))
        if status == 404 and device_id is not None:
            raise DEVICE_GONE.error(DEVICE_GONE.message(where), status=status, endpoint=endpoint)
        advice = advice_for(status)
        if advice is not None:
            raise advice.error(advice.message(where, permission=permission_for(endpoint), store=STORE_IN_THE_SECRET,
                                       host=self.host, status=status, to=""), status=status, endpoint=endpoint)
        if status != 200:
            raise KandjiApiError(f"{where} answered {status}: {_excerpt(response.text, self._token)}",
                                 status=status, endpoint=endpoint)
        try:
            body = json.loads(response.content)
        except ValueError:
            content_type = response.headers.get("Content-Type", "unknown content type")
            raise _Retry(f"a 200 whose body is not JSON ({content_type})") from None
        if not isinstance(body, expect):
            raise _Retry(f"a 200 whose JSON is a {type(body).__name__}, not a {expect.__name__}")
        return body

    def _observe_headers(self, headers: Any) -> None:
        remaining_hour = int_header(headers, "x-ratelimit-remaining-hour")
        if remaining_hour is not None:
            self.stats.remaining_hour = remaining_hour
            if self._budget is not None:
                self._budget.observe_remaining_hour(remaining_hour)
        # The API tells us its per-second window is spent: wait for it rather than meet a 429.
        if int_header(headers, "x-ratelimit-remaining-second") == 0:
            self._limiter.pause(1.0)

    def _read_timeout(self) -> float:
        if self._deadline is None:
            return self._retry.read_timeout
        return max(1.0, min(self._retry.read_timeout, self._deadline - self._clock()))

    def _backoff_delay(self, attempt: int) -> float:
        delay = min(self._retry.max_backoff, self._retry.base_backoff * 2 ** (attempt - 1))
        return delay * (0.5 + random.random() / 2)  # jitter, so workers do not retry in lockstep

    def _backoff(self, attempt: int, wait: float | None, reason: str = "retry") -> None:
        delay = wait if wait is not None else self._backoff_delay(attempt)
        self._check_deadline(delay, reason)
        self._sleep(delay)

    def _check_deadline(self, delay: float, reason: str, error: type[DeadlineExceeded] = DeadlineExceeded) -> None:
        if self._deadline is not None and self._clock() + delay > self._deadline:
            raise error(
                f"The run stopped before the Lambda's time ran out while the Kandji API kept failing "
                f"({reason}). Nothing was committed; the next scheduled run will try again.")


class _OtherHostRefused(BaseAdapter):
    """Mounted for every URL but the validated API origin: a request elsewhere fails before it is sent."""

    def __init__(self, endpoint: ApiEndpoint):
        super().__init__()
        self._endpoint = endpoint

    def send(self, request, **kwargs):  # noqa: ANN001 (requests' adapter signature)
        raise ConfigurationError(f"Refused to send a request outside the validated Kandji API host "
                                 f"{self._endpoint.host}: the token is only ever sent there.")

    def close(self) -> None:
        pass


def only_the_api_host(session: requests.Session, endpoint: ApiEndpoint, adapter: HTTPAdapter) -> None:
    """Route the validated origin to `adapter` and every other URL to a refusal (requests picks the
    longest matching prefix, and the trailing `/` keeps `acme.api.kandji.io.evil.example` out)."""
    refuse = _OtherHostRefused(endpoint)
    session.mount("https://", refuse)
    session.mount("http://", refuse)
    session.mount(endpoint.origin + "/", adapter)


def int_header(headers: Any, name: str) -> int | None:
    """A numeric header, or None when it is absent or not a number."""
    value = headers.get(name)
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def rate_limit_wait(headers: Any) -> float | None:
    """Honour Retry-After, else ratelimit-reset (seconds), else let the caller back off."""
    wait = _retry_after(headers)
    if wait is None:
        reset = int_header(headers, "ratelimit-reset")
        wait = float(reset) if reset is not None else None
    return None if wait is None else min(wait, 3600.0)


def _excerpt(text: str, token: str, limit: int = 300) -> str:
    """A short, token-free excerpt of an error body (400 bodies vary in shape)."""
    excerpt = " ".join((text or "").split())[:limit]
    return excerpt.replace(token, "<redacted>") if token else excerpt
