"""How the Kandji API's lists are paged: one paginator per paging strategy, with what it costs.

A paginator does no I/O (the model is dlt's `rest_client` paginators). The client asks it for the
next request's parameters, sends that request (with its own retries), and hands the body back;
the paginator answers with the rows that page adds, decides where the next page starts and when
the read is complete, and raises when the pages cannot be trusted. So each strategy is tested on
canned pages, and the number of requests it sends for N rows (`requests_for`, what `check`
prices a run with) sits beside the rules that send them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from kandji_snapshots.errors import KandjiApiError, MalformedResponse

logger = logging.getLogger(__name__)

PAGE_LIMIT = 300  # the API's maximum and default page size
MAX_PAGES = 2_000  # 600,000 devices: past that, paging is looping, not progressing
PRISM_OVERLAP = 2  # rows each Prism page by offset repeats from the one before, to see the table shift
PRISM_RECENT_ROWS = 4 * PAGE_LIMIT  # rows read last that a later page is matched against
PRISM_RESYNC_PAGES = 3  # pages asked further back for the rows read last before the read fails
PRISM_MAX_REQUESTS = MAX_PAGES * 100  # short pages and resyncs included: past that, Prism is looping


class Paginator(Protocol):
    """One read of one list: the client sends each request it asks for and hands it the body."""

    def next_request(self) -> dict[str, Any] | None: ...  # the next page's query parameters; None: read complete

    def update(self, body: Any) -> list[dict[str, Any]]: ...  # the rows the page adds; raises when untrustworthy


class PageRepeated(Exception):
    """The page only repeated rows already read: ask for it again after a back-off (`attempt` so far)."""

    def __init__(self, reason: str, attempt: int):
        super().__init__(reason)
        self.reason = reason
        self.attempt = attempt


class DeviceListMoved(Exception):
    """Devices before the current page were removed meanwhile: the list must be read again from the start."""


# --- the device list: by offset, pages overlapping by one device -------------------------------------

class DeviceListPaginator:
    """`GET /devices` by `offset` in `device_id` order, each page starting with the last device of the one before.

    A device removed while the list is read moves every later device one offset down, so the next
    page would start one device late and silently miss one that is still enrolled (which the differ
    would then report removed). The repeated device shows that: when it is not on the next page the
    paginator raises DeviceListMoved and the list is read again from the start. A page that only
    repeats devices already listed is asked for again (PageRepeated), up to `max_repeats` times.
    """

    def __init__(self, max_repeats: int):
        self._max_repeats = max_repeats
        self._seen: set[str] = set()
        self._offset = 0
        self._largest_page = 0
        self._last: str | None = None  # the last device of the previous page: the next page must start with it
        self._repeats = 0
        self._pages = 0
        self._done = False

    @staticmethod
    def requests_for(devices: int) -> int:
        """Requests to list `devices` devices (no retries): pages of PAGE_LIMIT that overlap by one device,
        until a page shorter than the full ones or just the overlap."""
        if devices <= 0:
            return 1  # one empty page
        if devices < PAGE_LIMIT:
            return 2  # the devices, then the overlap alone
        return (devices - PAGE_LIMIT) // (PAGE_LIMIT - 1) + 2

    def next_request(self) -> dict[str, Any] | None:
        """The next page's query parameters, or None when the list is complete."""
        if self._done:
            return None
        return {"limit": PAGE_LIMIT, "offset": self._start(), "ordering": "device_id"}

    def _start(self) -> int:
        return self._offset if self._last is None else self._offset - 1

    def update(self, page: list[Any]) -> list[dict[str, Any]]:
        """The devices `page` adds to the list."""
        for item in page:
            if not isinstance(item, dict) or not item.get("device_id"):
                raise MalformedResponse("GET /api/v1/devices returned an item without a device_id; "
                                        "the response is not a device list.", endpoint="devices")
        start = self._start()
        ids = [str(item["device_id"]) for item in page]
        if page and start != 0 and all(device_id in self._seen for device_id in ids) and ids != [self._last]:
            self._repeat(start)  # a page of just the expected overlap is the end, not a repeat
        self._repeats = 0
        if self._last is not None and self._last not in ids:
            raise DeviceListMoved  # the list moved down under the offset: a device may have been skipped
        new = [device for device, device_id in zip(page, ids) if device_id not in self._seen]
        if self._last is not None and len(new) < len(page) - 1:
            # The fleet shifted under the offset (a device enrolled mid-listing): keep each once.
            logger.info("device list page overlapped the previous one",
                        extra={"offset": start, "overlap": len(page) - len(new) - 1})
        self._seen.update(str(device["device_id"]) for device in new)
        self._largest_page = max(self._largest_page, len(page))
        # A page shorter than the ones before is the last. Not "shorter than the limit": if the
        # API ever capped pages lower, that rule would end the listing early and lose devices.
        if not page or len(page) < self._largest_page or not new:  # not new: the page was just the overlap
            self._done = True
            return new
        self._offset = start + len(page)
        self._last = ids[-1]
        self._pages += 1
        if self._pages >= MAX_PAGES:
            raise KandjiApiError(f"The device list did not end after {MAX_PAGES} pages; the API's paging is "
                                 "looping. Nothing was committed; try again later.", endpoint="devices")
        return new

    def _repeat(self, start: int) -> None:
        self._repeats += 1
        if self._repeats >= self._max_repeats:
            raise KandjiApiError(
                f"GET /api/v1/devices?offset={start} kept returning devices already listed: the "
                "API's paging is not advancing. Nothing was committed; try again later.", endpoint="devices")
        raise PageRepeated("the device list repeated a page", self._repeats)


# --- Prism tables: by cursor when given, else by offset with overlapping pages ------------------------

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


def prism_total(body: Any) -> int | None:
    """The row count a Prism envelope announces (`total`), or None when it has none that is a number."""
    total = body.get("total") if isinstance(body, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else None


@dataclass(frozen=True)
class PrismPage:
    """One Prism page as the paginator placed it in the table."""

    data: list[dict[str, Any]]  # every row the page holds
    new: list[dict[str, Any]]  # the rows not read before (the overlap and rows read twice left out)
    offset: int | None  # where the page starts in the table; None for a page asked by cursor
    total: int | None  # the page's `total`, None when absent or not a number
    stepped_back: bool  # asked further back than the overlap to find the rows read last


class PrismPaginator:
    """Every row of one Prism table (`GET /prism/<table>`), each exactly once, or an error.

    The envelope is `{"offset", "limit", "total", "data", "cursor"}`. Real pages can be shorter
    than `limit` and carry a null cursor while `total` is larger, so neither a short page nor a
    null cursor means "done": the next page is asked for by cursor when one is given, else by
    offset. Pages by offset start PRISM_OVERLAP rows early: Prism tables are live, a row removed
    before the offset moves every later row one place down (the next page would start one row late
    and skip one), a row inserted there moves them up (one row would be read twice). The rows a
    page repeats show where the table is now: the new rows are those after the newest row already
    read. When a page holds no row already read (more rows removed than the overlap), pages further
    back are asked for (first by as many rows as `total` shrank); when none holds one either, the
    read fails rather than go on with rows missing.

    The end is never taken on trust (`_is_complete`): the read ends only on a page that brings no row
    not read before (an empty page, or just the overlap), by offset once the cursor is null. With a
    `total`, that page is asked once the pages reach it, and the read fails when they run out before it
    or hold more rows than it (a `total` too low, even one landing on a page boundary, shows there).
    Without one (absent, or not a number) the pages go on until that page.
    A read that ends short raises: every caller would take the rows it did not get for removed apps
    or unknown posture. So does a server that serves a page or a cursor a second time (looping).
    """

    def __init__(self, endpoint: str, path: str):
        self._endpoint = endpoint
        self._where = f"GET /api/v1/{path}"
        self._cursor: str | None = None
        self._read = 0  # rows returned
        self._position = 0  # the table's offset of the first row not read yet, as of the latest page
        self._largest_page = 0
        self._recent = _RecentRows()
        self._total: int | None = None
        self._pages_seen: set[bytes] = set()
        self._cursors_seen: set[str] = set()
        self._requests = 0
        self._done = False
        self._resync = _Resync(self._overlap(), self._total)  # the offset step under way

    @staticmethod
    def requests_for(rows: int, page_rows: int = PAGE_LIMIT) -> int:
        """Requests to read a table of `rows` rows by offset (no shifts, no retries) when Prism serves
        `page_rows` rows a page: it asks for PAGE_LIMIT (real pages can be shorter, which only Prism
        knows), pages overlap by PRISM_OVERLAP rows from the second page on, one more page proves the end,
        and an empty table is one request."""
        page_rows = max(1, min(page_rows, PAGE_LIMIT))
        overlap = min(PRISM_OVERLAP, page_rows // 2)
        if rows <= 0:
            return 1  # the empty page is its own proof of the end
        pages = 1 if rows <= page_rows else 1 + math.ceil((rows - page_rows) / (page_rows - overlap))
        return pages + 1  # and the page that proves the end: nothing but rows already read

    def _overlap(self) -> int:
        return min(PRISM_OVERLAP, self._largest_page // 2)

    def next_request(self) -> dict[str, Any] | None:
        """The next page's query parameters, or None when every row was read."""
        if self._done:
            return None
        self._requests += 1
        if self._requests > PRISM_MAX_REQUESTS:
            raise KandjiApiError(f"{self._where}: paging did not end.", endpoint=self._endpoint)
        if self._cursor:
            return {"limit": PAGE_LIMIT, "cursor": self._cursor}
        return {"limit": PAGE_LIMIT, "offset": self._resync.offset(self._position)}

    def update(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows `body` (the envelope of the page asked for last) adds; none while pages further back
        are asked for."""
        data = body.get("data")
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise MalformedResponse(f"{self._where} returned no 'data' list of objects.", endpoint=self._endpoint)
        if self._cursor:
            page = PrismPage(data, data, None, prism_total(body), stepped_back=False)
        else:
            page = self._place_by_offset(data, prism_total(body))
            if page is None:
                return []
        self._accept(page, body.get("cursor") or None)
        return page.new

    def _place_by_offset(self, data: list[dict[str, Any]], total: int | None) -> PrismPage | None:
        """Where a page asked by offset sits: its new rows, or None when it holds none of the rows read last
        and the next request steps further back."""
        step = self._resync
        offset = step.offset(self._position)
        if not self._recent or not step.overlap:  # the first page, or pages of one row (nothing to overlap)
            return PrismPage(data, data, offset, total, step.stepped_back)
        if not data:  # the end, or a page missing: _is_complete tells
            return PrismPage(data, [], offset, total, step.stepped_back)
        newest = self._recent.newest_in(data)
        if newest is not None:
            if step.stepped_back or newest != step.overlap - 1:
                logger.info("Prism table shifted while it was read: resynchronised on the rows already read",
                            extra={"endpoint": self._endpoint, "offset": offset, "rows_read": self._read,
                                   "pages_further_back": step.attempt, "overlap_found_at": newest})
            return PrismPage(data, data[newest + 1:], offset, total, step.stepped_back)
        if offset == 0 or step.attempt == PRISM_RESYNC_PAGES:
            raise KandjiApiError(
                f"{self._where} changed too much while it was read: after {self._read} rows, none of the rows "
                f"read last was found again, even {self._position - offset} rows back (more rows removed between "
                "two pages than could be matched, or Prism's order is not stable), so rows could have been "
                "skipped. Nothing of this read is kept; the next run reads it again.", endpoint=self._endpoint)
        step.step_back(len(data), total)
        return None

    def _accept(self, page: PrismPage, next_cursor: str | None) -> None:
        if page.data and not page.stepped_back:  # a page asked further back may rightly equal one served before
            digest = hashlib.sha256(json.dumps(page.data, sort_keys=True, default=str).encode()).digest()
            if digest in self._pages_seen:
                raise KandjiApiError(
                    f"{self._where} served a page it had served before (after {self._read} rows): Prism's paging "
                    "is not advancing. The next run reads it again.", endpoint=self._endpoint)
            self._pages_seen.add(digest)
        self._position = (self._position if page.offset is None else page.offset) + len(page.data)
        self._largest_page = max(self._largest_page, len(page.data))
        self._recent.add(page.new)
        self._read += len(page.new)
        self._total = page.total
        if self._is_complete(page):
            self._done = True
            return
        if next_cursor is not None:
            if next_cursor in self._cursors_seen:
                raise KandjiApiError(f"{self._where} returned a cursor it had returned before: Prism's paging is "
                                     "looping. The next run reads it again.", endpoint=self._endpoint)
            self._cursors_seen.add(next_cursor)
        self._cursor = next_cursor
        self._resync = _Resync(self._overlap(), self._total)

    def _is_complete(self, page: PrismPage) -> bool:
        """Whether `page` proves that every row was read; raises when the pages and `total` disagree."""
        total = page.total
        if total is None:  # no count to reach: only a page that adds nothing shows the end
            if page.new:
                return False
            if page.stepped_back or len(page.data) > self._resync.overlap:  # more than the overlap, all read
                raise KandjiApiError(
                    f"{self._where} announced no total and served a page of rows already read (after "
                    f"{self._read} rows) while the table shifted, so where it ends is unknown. Nothing of this "
                    "read is kept; the next run reads it again.", endpoint=self._endpoint)
            return True
        if page.offset is not None and self._position > total:  # this very answer contradicts itself
            raise KandjiApiError(
                f"{self._where} served rows up to {self._position} while it announced a total of {total}: "
                "its pages and its total disagree, so which rows the table holds is unknown. Nothing of this "
                "read is kept; the next run reads it again.", endpoint=self._endpoint)
        if self._position >= total:  # where the table ends now: rows removed meanwhile are not waited for
            # Proven only by a page that adds nothing: a `total` too low that lands on a page boundary
            # would otherwise end the read with rows unread. The next page (one more request per table)
            # repeats the overlap, or brings rows past `total` and fails the read above.
            return not page.new
        if not page.data:
            raise KandjiApiError(
                f"{self._where} ran out of rows after {self._read} of the {total} it announced, so the rows of "
                "some devices are unknown. The next run reads it again.", endpoint=self._endpoint)
        return False


class _Resync:
    """One step by offset: how far back of the position the page is asked, widened while the rows read last
    are not found on it."""

    def __init__(self, overlap: int, total_before: int | None):
        self.overlap = overlap
        self.back = overlap
        self.attempt = 0  # pages asked further back so far
        self.stepped_back = False
        self._total_before = total_before

    def offset(self, position: int) -> int:
        return max(0, position - self.back)

    def step_back(self, page_rows: int, total: int | None) -> None:
        shrunk = (self._total_before - total) if self._total_before is not None and total is not None else 0
        self.back = max(self.overlap + shrunk, self.back + max(1, page_rows // 2))
        self.stepped_back = True
        self.attempt += 1


# --- tenant-wide lists: `results` pages chained by a `next` URL, or numbered pages -------------------

def _results(body: Any, where: str, endpoint: str) -> list[dict[str, Any]]:
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or not all(isinstance(row, dict) for row in results):
        raise MalformedResponse(f"{where} returned no 'results' list of objects.", endpoint=endpoint)
    return results


class NextUrlPaginator:
    """`{"results": [...], "next": <full URL or null>}` pages: the audit trail, threats, vulnerability
    detections, users and blueprints.

    `next` is a full URL; only its query is taken, and only when it names this very path on the API's
    own host (a `next` elsewhere is refused: the token goes to the validated host only). A `next` seen
    before is a loop and fails the read. When the envelope announces a `count`, a read that ends short
    of it fails (the rows it did not get would look deleted). `first_params` are the first page's query.
    """

    def __init__(self, endpoint: str, path: str, host: str, first_params: dict[str, Any] | None = None):
        self._endpoint = endpoint
        self._path = "/api/v1/" + path.strip("/")
        self._where = f"GET {self._path}"
        self._host = host
        self._params: dict[str, Any] | None = dict(first_params or {})
        self._seen: set[str] = set()
        self._read = 0
        self._pages = 0

    @staticmethod
    def requests_for(rows: int, page_rows: int) -> int:
        """Requests to read `rows` rows when the API serves `page_rows` a page: the last page carries `next: null`."""
        return max(1, math.ceil(rows / max(1, page_rows)))

    def next_request(self) -> dict[str, Any] | None:
        return self._params

    def update(self, body: Any) -> list[dict[str, Any]]:
        rows = _results(body, self._where, self._endpoint)
        self._read += len(rows)
        self._pages += 1
        following = body.get("next")
        if following in (None, ""):
            count = body.get("count")
            if isinstance(count, int) and not isinstance(count, bool) and self._read < count:
                raise KandjiApiError(f"{self._where} ended after {self._read} of the {count} rows it announced; "
                                     "nothing of this read is kept, the next run reads it again.",
                                     endpoint=self._endpoint)
            self._params = None
            return rows
        self._params = self._query_of(str(following))
        if following in self._seen or self._pages >= MAX_PAGES:
            raise KandjiApiError(f"{self._where}: paging is looping (a `next` link served twice).",
                                 endpoint=self._endpoint)
        self._seen.add(str(following))
        return rows

    def _query_of(self, url: str) -> dict[str, Any]:
        split = urlsplit(url)
        if split.netloc.lower() != self._host.lower() or split.path.rstrip("/") != self._path:
            raise KandjiApiError(f"{self._where} pointed its next page elsewhere ({split.netloc}{split.path}): "
                                 "refused, the token is only sent to the validated host and path.",
                                 endpoint=self._endpoint)
        return dict(parse_qsl(split.query, keep_blank_values=True))


class PageNumberPaginator:
    """`page`/`size` pages (the vulnerability list): until a page shorter than `size`, or empty.

    Its envelope is parsed leniently: the recorded example holds `total` twice (JSON keeps the last).
    """

    def __init__(self, endpoint: str, path: str, size: int):
        self._endpoint = endpoint
        self._where = f"GET /api/v1/{path}"
        self._size = size
        self._page: int | None = 1

    @staticmethod
    def requests_for(rows: int, size: int) -> int:
        return rows // max(1, size) + 1  # a full last page needs one more, empty, to prove the end

    def next_request(self) -> dict[str, Any] | None:
        return None if self._page is None else {"page": self._page, "size": self._size}

    def update(self, body: Any) -> list[dict[str, Any]]:
        rows = _results(body, self._where, self._endpoint)
        assert self._page is not None
        self._page = None if len(rows) < self._size else self._page + 1
        if self._page is not None and self._page > MAX_PAGES:
            raise KandjiApiError(f"{self._where}: paging did not end.", endpoint=self._endpoint)
        return rows
