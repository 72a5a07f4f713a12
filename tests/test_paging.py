"""The paginators on canned pages: no HTTP, no client. Each test serves a table from a list, drives a
paginator the way KandjiClient does (ask its next request, hand it the page), and checks the rows it
returns, the requests it asks for (against the cost it states) and the reads it refuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kandji_snapshots.errors import KandjiApiError, MalformedResponse
from kandji_snapshots.kandji.paging import (
    PAGE_LIMIT,
    DeviceListMoved,
    DeviceListPaginator,
    PageRepeated,
    PrismPaginator,
)


def read(paginator: DeviceListPaginator | PrismPaginator,
         serve: Callable[[dict[str, Any]], Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows returned, requests asked) for a whole read; a repeated page is asked again at once."""
    rows, asked = [], []
    while (params := paginator.next_request()) is not None:
        asked.append(params)
        assert len(asked) <= 10_000, "the paging did not end"
        try:
            rows.extend(paginator.update(serve(params)))
        except PageRepeated:
            continue
    return rows, asked


# --- the device list -----------------------------------------------------------------------------------

def devices(count: int, first: int = 0) -> list[dict[str, Any]]:
    return [{"device_id": f"d{index:06d}"} for index in range(first, first + count)]


class DeviceList:
    """`GET /devices?limit&offset` over a list that `changes` (request number -> change) edit between pages."""

    def __init__(self, rows: list[dict[str, Any]], changes: dict[int, Callable[[list], None]] | None = None):
        self.rows = rows
        self.changes = changes or {}
        self.requests = 0

    def __call__(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.requests += 1
        if self.requests in self.changes:
            self.changes[self.requests](self.rows)
        assert params["ordering"] == "device_id"
        return self.rows[params["offset"]:params["offset"] + params["limit"]]


@pytest.mark.parametrize("count", [0, 1, 299, 300, 301, 599, 600, 1_000])
def test_the_device_list_is_read_whole_in_the_requests_it_states(count):
    fleet = devices(count)
    rows, asked = read(DeviceListPaginator(max_repeats=3), DeviceList(list(fleet)))
    assert rows == fleet
    assert len(asked) == DeviceListPaginator.requests_for(count)
    if count >= 600:  # each page after the first starts with the last device of the one before
        assert [params["offset"] for params in asked[:3]] == [0, 299, 598]


def test_a_device_removed_before_the_offset_between_two_pages_restarts_the_list():
    served = DeviceList(devices(700), changes={2: lambda rows: rows.pop(10)})
    with pytest.raises(DeviceListMoved):
        read(DeviceListPaginator(max_repeats=3), served)


def test_a_device_enrolled_before_the_offset_between_two_pages_is_read_once():
    fleet = devices(700)
    early = {"device_id": "d000000a"}  # sorts right after d000000: inserted before the offset
    served = DeviceList(list(fleet), changes={2: lambda rows: rows.insert(1, early)})
    rows, _ = read(DeviceListPaginator(max_repeats=3), served)
    assert sorted(row["device_id"] for row in rows) == sorted(row["device_id"] for row in fleet)
    assert len(rows) == len({row["device_id"] for row in rows})  # each once; the new one is read next run


def test_a_page_that_only_repeats_devices_listed_is_asked_again_then_fails():
    fleet = devices(600)
    served = DeviceList(fleet)
    paginator = DeviceListPaginator(max_repeats=2)
    paginator.update(served(paginator.next_request()))  # devices 0-299
    repeated = fleet[:PAGE_LIMIT]  # offset 299 answered with the first page again
    with pytest.raises(PageRepeated) as again:
        paginator.update(repeated)
    assert again.value.attempt == 1 and paginator.next_request()["offset"] == 299  # the same page, asked again
    with pytest.raises(KandjiApiError, match=r"GET /api/v1/devices\?offset=299 kept returning devices already listed"):
        paginator.update(repeated)


class RepeatingDeviceList(DeviceList):
    """Answers the `repeats` requests after the first with the first page again (a server repeating itself)."""

    def __init__(self, rows: list[dict[str, Any]], repeats: int):
        super().__init__(rows)
        self.repeats = repeats

    def __call__(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.requests >= 1 and self.repeats:
            self.repeats -= 1
            return super().__call__({**params, "offset": 0})
        return super().__call__(params)


def test_a_repeated_page_asked_again_lets_the_list_go_on_to_its_end_with_every_device_once():
    fleet = devices(1_000)
    rows, asked = read(DeviceListPaginator(max_repeats=3), RepeatingDeviceList(list(fleet), repeats=2))
    assert rows == fleet  # each device once, in order: the repeated page added nothing
    assert [params["offset"] for params in asked] == [0, 299, 299, 299, 598, 897]


def test_a_device_list_item_without_a_device_id_is_refused():
    paginator = DeviceListPaginator(max_repeats=3)
    paginator.next_request()
    with pytest.raises(MalformedResponse, match="without a device_id"):
        paginator.update([{"device_id": "d1"}, {"name": "no id"}])


# --- Prism tables ----------------------------------------------------------------------------------------

def app_rows(count: int, first: int = 0) -> list[dict[str, Any]]:
    return [{"device_id": f"d{index // 3:05d}", "name": f"App {index % 3}", "bundle_id": f"com.example.{index % 3}",
             "path": f"/Applications/App {index % 3}.app", "version": "1.0"} for index in range(first, first + count)]


class PrismTable:
    """`GET /prism/<table>` in the real envelope: pages of at most `page_rows`, `total` as given (True: the real
    count, None: left out, a number: that number), a cursor when `cursors`, and `changes` between pages."""

    def __init__(self, rows: list[dict[str, Any]], page_rows: int = PAGE_LIMIT, total: Any = True,
                 cursors: bool = False, changes: dict[int, Callable[[list], None]] | None = None):
        self.rows, self.page_rows, self.total, self.cursors = rows, page_rows, total, cursors
        self.changes = changes or {}
        self.requests = 0

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        if self.requests in self.changes:
            self.changes[self.requests](self.rows)
        offset = int(params["cursor"]) if "cursor" in params else params["offset"]
        data = self.rows[offset:offset + min(params["limit"], self.page_rows)]
        following = offset + len(data)
        body = {"offset": None, "limit": params["limit"], "data": data,
                "cursor": str(following) if self.cursors and data and following < len(self.rows) else None}
        if self.total is not None:
            body["total"] = len(self.rows) if self.total is True else self.total
        return body


def prism() -> PrismPaginator:
    return PrismPaginator("prism", "prism/apps")


@pytest.mark.parametrize("count, page_rows", [(0, 300), (250, 300), (300, 300), (650, 300), (650, 100), (301, 25),
                                              (24, 25), (1_000, 7)])
def test_a_prism_table_is_read_whole_by_offset_in_the_requests_it_states(count, page_rows):
    table = app_rows(count)
    rows, asked = read(prism(), PrismTable(list(table), page_rows))
    assert rows == table
    assert len(asked) == PrismPaginator.requests_for(count, page_rows)
    if count > page_rows:  # the second page starts two rows early: the overlap
        assert asked[1] == {"limit": PAGE_LIMIT, "offset": page_rows - 2}


def test_a_prism_cursor_is_followed_when_one_is_given():
    table = app_rows(650)
    rows, asked = read(prism(), PrismTable(list(table), 100, cursors=True))
    assert rows == table
    assert asked[0] == {"limit": PAGE_LIMIT, "offset": 0} and asked[1] == {"limit": PAGE_LIMIT, "cursor": "100"}
    assert len(asked) == 8  # no overlap by cursor: 650 rows in pages of 100, then the page by offset proving the end
    assert asked[-1] == {"limit": PAGE_LIMIT, "offset": 650 - 2}


@pytest.mark.parametrize("change", ["removed", "inserted"])
def test_a_prism_row_removed_or_inserted_before_the_offset_loses_and_repeats_nothing(change):
    table = app_rows(200)
    edit = {"removed": lambda rows: rows.pop(5),
            "inserted": lambda rows: rows.insert(5, app_rows(1, first=9_000)[0])}[change]
    rows, asked = read(prism(), PrismTable(list(table), 25, changes={3: edit}))
    assert rows == table  # every row exactly once, as it was when read
    assert len(asked) == PrismPaginator.requests_for(200, 25)


def test_more_prism_rows_removed_than_the_overlap_are_found_by_asking_further_back():
    table = app_rows(200)

    def remove_five(rows):
        del rows[10:15]

    rows, asked = read(prism(), PrismTable(list(table), 25, changes={3: remove_five}))
    assert rows == table
    assert len(asked) > PrismPaginator.requests_for(200, 25)  # a page asked further back
    assert asked[2]["offset"] == 46 and asked[3]["offset"] < 46


def test_a_prism_table_that_changed_past_recognition_fails_the_read():
    def replace_all(rows):
        rows[:] = app_rows(len(rows), first=50_000)

    with pytest.raises(KandjiApiError, match="changed too much while it was read"):
        read(prism(), PrismTable(app_rows(200), 25, changes={3: replace_all}))


def test_prism_rows_running_out_before_the_total_fail_the_read():
    with pytest.raises(KandjiApiError, match="ran out of rows after 300 of the 900 it announced"):
        read(prism(), PrismTable(app_rows(600), total=900, changes={2: list.clear}))


# The end is never taken on trust (issue 19, item 3).

def test_a_prism_table_without_a_total_is_read_past_the_null_cursor_until_a_page_adds_nothing():
    table = app_rows(605)
    rows, asked = read(prism(), PrismTable(list(table), 100, total=None))
    assert rows == table  # not just the first page: the cursor is always null
    assert asked[-1] == {"limit": PAGE_LIMIT, "offset": 603}  # the page holding only the overlap: the end


@pytest.mark.parametrize("total", ["605", 605.0, False])
def test_a_total_that_is_not_a_number_is_no_total(total):
    table = app_rows(605)
    rows, _ = read(prism(), PrismTable(list(table), 100, total=total))
    assert rows == table


def test_an_empty_prism_table_without_a_total_ends_at_its_empty_page():
    rows, asked = read(prism(), PrismTable([], total=None))
    assert rows == [] and len(asked) == 1


def test_a_prism_total_lower_than_the_rows_served_fails_the_read():
    with pytest.raises(KandjiApiError, match="served rows up to 300 while it announced a total of 100: its pages "
                                             "and its total disagree"):
        read(prism(), PrismTable(app_rows(605), total=100))


def test_a_prism_total_too_low_that_lands_on_a_page_boundary_fails_the_read():
    # 100 announced, pages of 25: the fourth page reaches the total exactly; only the page after it shows more.
    with pytest.raises(KandjiApiError, match="announced a total of 100: its pages and its total disagree"):
        read(prism(), PrismTable(app_rows(605), 25, total=100))


def test_a_prism_read_that_reaches_its_total_ends_on_a_page_of_rows_already_read():
    table = app_rows(100)
    rows, asked = read(prism(), PrismTable(list(table), 25))
    assert rows == table
    assert asked[-1]["offset"] == 98  # the last two rows again: nothing past the total


def test_a_prism_table_without_a_total_that_shifts_at_its_end_fails_rather_than_guess():
    table = app_rows(100)

    def insert_many(rows):  # more rows than the overlap inserted before the offset: the last page is all repeats
        rows[:0] = app_rows(30, first=70_000)

    with pytest.raises(KandjiApiError, match="announced no total"):
        read(prism(), PrismTable(table, 100, total=None, changes={2: insert_many}))


def test_a_prism_page_served_twice_fails_the_read():
    page = {"offset": None, "limit": 300, "data": app_rows(1), "cursor": "again"}
    with pytest.raises(KandjiApiError, match="served a page it had served before"):
        read(prism(), lambda params: page)


def test_a_prism_cursor_handed_out_twice_fails_the_read():
    pages = {"0": "1", "1": "2", "2": "1"}

    def serve(params):
        at = params.get("cursor", "0")
        return {"total": 10, "data": app_rows(1, first=int(at)), "cursor": pages[at]}

    with pytest.raises(KandjiApiError, match="returned a cursor it had returned before"):
        read(prism(), serve)


def test_a_prism_page_without_a_data_list_is_refused():
    paginator = prism()
    paginator.next_request()
    with pytest.raises(MalformedResponse, match="GET /api/v1/prism/apps returned no 'data' list of objects"):
        paginator.update({"total": 3, "data": {"rows": []}})
