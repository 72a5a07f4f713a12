"""The Kandji HTTP adapter: the only module that talks to the API.

It pages, retries what is worth retrying (429, 5xx, connection errors, garbled
bodies), paces every request through one shared `RateLimiter`, gives up before
the run's deadline, and turns everything else into an error that says what to fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from kandji_snapshots.kandji.config import ApiEndpoint, KandjiCredentials, path_segment
from kandji_snapshots.errors import (ConfigurationError, DeadlineExceeded, DeviceNotFound, KandjiApiError,
                                     KandjiAuthError, MalformedResponse, RateLimitExhausted)
from kandji_snapshots.kandji.rate_limiter import RateLimiter
from kandji_snapshots.kandji.permissions import permission_for

logger = logging.getLogger(__name__)

PAGE_LIMIT = 300  # the API's maximum and default page size
MAX_PAGES = 2_000  # 600,000 devices: past that, paging is looping, not progressing
PRISM_OVERLAP = 2  # rows each Prism page by offset repeats from the one before, to see the table shift
PRISM_RECENT_ROWS = 4 * PAGE_LIMIT  # rows read last that a later page is matched against
PRISM_RESYNC_PAGES = 3  # pages asked further back for the rows read last before the read fails

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
        """Every device of the tenant, paged by offset in a stable order.

        A device removed while the list is read moves every later device one offset down, so
        the next page would start one device late and silently miss one that is still enrolled
        (which the differ would then report removed). Pages overlap by one device to notice
        that, and the list is read again from the start when it happens.
        """
        for attempt in range(1, self._retry.max_attempts + 1):
            devices = self._list_devices_once()
            if devices is not None:
                return devices
            self.stats.count("retries")
            logger.warning("the device list changed while it was read (a device was removed): reading it again",
                           extra={"attempt": attempt})
        raise KandjiApiError(
            f"GET /api/v1/devices: the device list changed while it was read, {self._retry.max_attempts} times "
            "in a row (devices removed between two pages), so no complete list could be taken. Nothing was "
            "committed; the next scheduled run will try again.", endpoint="devices")

    def _list_devices_once(self) -> list[dict[str, Any]] | None:
        """One pass over the device list; None if devices before the current page were removed meanwhile."""
        devices: list[dict[str, Any]] = []
        seen: set[str] = set()
        offset, largest_page = 0, 0
        last: str | None = None  # the last device of the previous page: the next page must start with it
        for _ in range(MAX_PAGES):
            start = offset if last is None else offset - 1
            page = self._device_page(start, seen, last)
            ids = [str(device["device_id"]) for device in page]
            if last is not None and last not in ids:
                return None  # the list moved down under the offset: a device may have been skipped
            new = [device for device, device_id in zip(page, ids) if device_id not in seen]
            if last is not None and len(new) < len(page) - 1:
                # The fleet shifted under the offset (a device enrolled mid-listing): keep each once.
                logger.info("device list page overlapped the previous one",
                            extra={"offset": start, "overlap": len(page) - len(new) - 1})
            seen.update(str(device["device_id"]) for device in new)
            devices.extend(new)
            largest_page = max(largest_page, len(page))
            # A page shorter than the ones before is the last. Not "shorter than the limit": if the
            # API ever capped pages lower, that rule would end the listing early and lose devices.
            if not page or len(page) < largest_page or not new:  # not new: the page was just the overlap
                return devices
            offset = start + len(page)
            last = ids[-1]
        raise KandjiApiError(f"The device list did not end after {MAX_PAGES} pages; the API's paging is "
                             "looping. Nothing was committed; try again later.", endpoint="devices")

    def _device_page(self, offset: int, seen: set[str], overlap: str | None = None) -> list[dict[str, Any]]:
        """One page of the device list; a page that only repeats devices already seen is retried.

        `overlap` is the device the page is expected to start with (already seen): a page of
        just that device is the end of the list, not a repeat.
        """
        params = {"limit": PAGE_LIMIT, "offset": offset, "ordering": "device_id"}
        attempts = 0
        while True:
            page = self._get("devices", "devices", params, expect=list)
            for item in page:
                if not isinstance(item, dict) or not item.get("device_id"):
                    raise MalformedResponse("GET /api/v1/devices returned an item without a device_id; "
                                            "the response is not a device list.", endpoint="devices")
            ids = [str(item["device_id"]) for item in page]
            if not page or offset == 0 or any(device_id not in seen for device_id in ids) or ids == [overlap]:
                return page
            attempts += 1
            self.stats.count("retries")
            if attempts >= self._retry.max_attempts:
                raise KandjiApiError(
                    f"GET /api/v1/devices?offset={offset} kept returning devices already listed: the "
                    "API's paging is not advancing. Nothing was committed; try again later.",
                    endpoint="devices")
            self._backoff(attempts, None, reason="the device list repeated a page")

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

    def _prism_rows(self, endpoint: str, path: str) -> Iterator[dict[str, Any]]:
        """Every row of a Prism table, read until the `total` its envelope announces.

        The envelope is `{"offset", "limit", "total", "data", "cursor"}`. Real pages can be shorter
        than `limit` and carry a null cursor while `total` is larger, so neither a short page nor a
        null cursor means "done": the next page is asked for by cursor when one is given, else by
        offset (`_prism_offset_page`: pages overlap, so a table that shifts under the offset
        neither skips nor repeats a row). Only an envelope without `total` ends at an empty page
        or a null cursor. A read that runs out of rows before `total` raises: every caller would
        take the rows it did not get for removed apps or unknown posture. So does a server that
        serves a page or a cursor a second time (it is looping, not paging).
        """
        where = f"GET /api/v1/{path}"
        cursor: str | None = None
        read = 0  # rows yielded
        position = 0  # the table's offset of the first row not read yet, as of the latest page
        largest_page = 0
        recent = _RecentRows()
        total: int | None = None
        pages_seen: set[bytes] = set()
        cursors_seen: set[str] = set()
        for _ in range(MAX_PAGES * 100):
            if cursor:
                body = self._get(endpoint, path, {"limit": PAGE_LIMIT, "cursor": cursor}, expect=dict)
                data, total = _prism_envelope(body, where, endpoint)
                new, position, stepped_back = data, position + len(data), False
            else:
                body, data, new, offset, total, stepped_back = self._prism_offset_page(
                    endpoint, path, where, position, min(PRISM_OVERLAP, largest_page // 2), recent, total, read)
                position = offset + len(data)
            if data and not stepped_back:  # a page asked further back may rightly equal one served before
                page = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).digest()
                if page in pages_seen:
                    raise KandjiApiError(
                        f"{where} served a page it had served before (after {read} rows): Prism's paging is "
                        "not advancing. The next run reads it again.", endpoint=endpoint)
                pages_seen.add(page)
            largest_page = max(largest_page, len(data))
            recent.add(new)
            yield from new
            read += len(new)
            next_cursor = body.get("cursor") or None
            if total is None:
                if not data or not next_cursor:
                    return
            elif position >= total:  # where the table ends now: rows removed meanwhile are not waited for
                return
            elif not data:
                raise KandjiApiError(
                    f"{where} ran out of rows after {read} of the {total} it announced, so the rows of some "
                    "devices are unknown. The next run reads it again.", endpoint=endpoint)
            if next_cursor is not None:
                if next_cursor in cursors_seen:
                    raise KandjiApiError(f"{where} returned a cursor it had returned before: Prism's paging is "
                                         "looping. The next run reads it again.", endpoint=endpoint)
                cursors_seen.add(next_cursor)
            cursor = next_cursor
        raise KandjiApiError(f"{where}: paging did not end.", endpoint=endpoint)

    def _prism_offset_page(self, endpoint: str, path: str, where: str, position: int, overlap: int,
                           recent: _RecentRows, total_before: int | None, read: int
                           ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], int, int | None, bool]:
        """The next page by offset, starting `overlap` rows early: (body, rows, new rows, offset, total, stepped back).

        Prism tables are live: a row removed before the offset moves every later row one place
        down (the next page would start one row late and skip one), a row inserted there moves
        them up (one row would be read twice). The rows a page repeats from the previous one show
        where the table is now: the new rows are those after the newest row already read. When the
        page holds no row already read (more rows removed than the overlap), pages further back are
        asked for (first by as many rows as `total` shrank); when none holds one either, the read fails
        rather than go on with rows missing.
        """
        back, stepped_back = overlap, False
        for attempt in range(PRISM_RESYNC_PAGES + 1):
            offset = max(0, position - back)
            body = self._get(endpoint, path, {"limit": PAGE_LIMIT, "offset": offset}, expect=dict)
            data, total = _prism_envelope(body, where, endpoint)
            if not recent or not overlap:  # the first page, or pages of one row (nothing to overlap)
                return body, data, data, offset, total, stepped_back
            if not data and (total is None or offset < total):
                return body, data, [], offset, total, stepped_back  # the end, or a page missing: the caller tells
            newest = recent.newest_in(data)
            if newest is not None:
                if stepped_back or newest != overlap - 1:
                    logger.info("Prism table shifted while it was read: resynchronised on the rows already read",
                                extra={"endpoint": endpoint, "offset": offset, "rows_read": read,
                                       "pages_further_back": attempt, "overlap_found_at": newest})
                return body, data, data[newest + 1:], offset, total, stepped_back
            if offset == 0 or attempt == PRISM_RESYNC_PAGES:
                break
            shrunk = (total_before - total) if total_before is not None and total is not None else 0
            back = max(overlap + shrunk, back + max(1, len(data) // 2))
            stepped_back = True
        raise KandjiApiError(
            f"{where} changed too much while it was read: after {read} rows, none of the rows read last was "
            f"found again, even {position - offset} rows back (more rows removed between two pages than could be "
            "matched, or Prism's order is not stable), so rows could have been skipped. Nothing of this read "
            "is kept; the next run reads it again.", endpoint=endpoint)

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
                    raise KandjiApiError(
                        f"GET /api/v1/{path} failed after retries: {retry.reason}. Nothing "
                        "was committed; the next scheduled run will try again.", endpoint=endpoint) from None
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
        # Kandji answers 401 and 403 loosely (a token stripped of its permissions gets a 401): name both causes.
        permission = permission_for(endpoint)
        if status == 401:
            raise KandjiAuthError(
                f"{where} answered 401 Unauthorized: the API token is wrong, revoked or expired, or it lacks "
                f"the permission {permission} (Kandji answers 401 for both). Check the token's permissions in "
                "Kandji (Settings > Access > API Token); if they are right, create a new token and store it "
                "in the Kandji secret.", status=status, endpoint=endpoint)
        if status == 403:
            raise KandjiAuthError(
                f"{where} answered 403 Forbidden: the API token lacks the permission {permission}, or the "
                "token is wrong or revoked (Kandji answers 403 for both). Add the permission to the token in "
                "Kandji (Settings > Access > API Token); if it is there, create a new token and store it in "
                "the Kandji secret.", status=status, endpoint=endpoint)
        if status == 404 and device_id is not None:
            raise DeviceNotFound(f"{where} answered 404: the device was unenrolled during the run.",
                                 status=status, endpoint=endpoint)
        if status == 404:
            raise KandjiApiError(
                f"{where} answered 404 Not Found on {self.host}: the URL does not lead to the Kandji API. "
                "Check the tenant name in the API URL (Kandji > Settings > Access > API URL).",
                status=status, endpoint=endpoint)
        if 300 <= status < 400:
            raise KandjiApiError(
                f"{where} answered a {status} redirect; the collector does not follow redirects so the "
                "token never leaves the tenant's host. Use the API URL shown in Kandji (Settings > Access).",
                status=status, endpoint=endpoint)
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


def device_list_requests(devices: int) -> int:
    """How many requests `KandjiClient.list_devices` sends for a fleet of `devices` (no retries): pages of
    PAGE_LIMIT that overlap by one device, until a page shorter than the full ones or just the overlap."""
    if devices <= 0:
        return 1  # one empty page
    if devices < PAGE_LIMIT:
        return 2  # the devices, then the overlap alone
    return (devices - PAGE_LIMIT) // (PAGE_LIMIT - 1) + 2


def prism_row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a Prism row is about, to recognise it on the next page.

    A posture category has one row per device, so `device_id` alone; an apps row is one app of a
    device (several per device), told apart by the app's name, bundle id and path. Never the
    columns Prism rewrites in place while a table is read (versions, posture values, the
    `*_at` times, the device's name or user): a row must still be known after a device checks in.
    """
    return (row.get("device_id"), row.get("name"), row.get("bundle_id"), row.get("path"))


class _RecentRows:
    """The keys of the rows read last (with how often each was read), to find them on a later page."""

    def __init__(self, size: int = PRISM_RECENT_ROWS):
        self._keys: deque[tuple[Any, ...]] = deque()
        self._counts: Counter[tuple[Any, ...]] = Counter()
        self._size = size

    def __bool__(self) -> bool:
        return bool(self._keys)

    def add(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            key = prism_row_key(row)
            self._keys.append(key)
            self._counts[key] += 1
            if len(self._keys) > self._size:
                self._counts[self._keys.popleft()] -= 1

    def newest_in(self, page: list[dict[str, Any]]) -> int | None:
        """The index of the newest row of `page` already read, or None when the page has none.

        Each read row matches one row of the page at most, so of two rows alike (the same app
        twice on a device) the unread one is not taken for the one already read.
        """
        matched: Counter[tuple[Any, ...]] = Counter()
        newest = None
        for index, row in enumerate(page):
            key = prism_row_key(row)
            if matched[key] < self._counts[key]:
                matched[key] += 1
                newest = index
        return newest


def _prism_envelope(body: dict[str, Any], where: str, endpoint: str) -> tuple[list[dict[str, Any]], int | None]:
    """A Prism page's rows and `total` (None when it has none)."""
    data = body.get("data")
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise MalformedResponse(f"{where} returned no 'data' list of objects.", endpoint=endpoint)
    return data, prism_total(body)


def prism_total(body: Any) -> int | None:
    """The row count a Prism envelope announces (`total`), or None when it has none that is a number."""
    total = body.get("total") if isinstance(body, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else None


def prism_table_requests(rows: int, page_rows: int = PAGE_LIMIT) -> int:
    """How many requests `KandjiClient._prism_rows` sends to read a Prism table of `rows` rows by offset
    (no shifts, no retries) when Prism serves `page_rows` rows a page: it asks for PAGE_LIMIT (real pages
    can be shorter, which only Prism knows), pages overlap by PRISM_OVERLAP rows from the second page on,
    and an empty table is one request."""
    page_rows = max(1, min(page_rows, PAGE_LIMIT))
    overlap = min(PRISM_OVERLAP, page_rows // 2)
    if rows <= page_rows:
        return 1
    return 1 + math.ceil((rows - page_rows) / (page_rows - overlap))


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
