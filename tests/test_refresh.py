"""Request budget and rolling refresh: never overspend, never drop a device, carry rows unchanged."""

import pytest
from kandji_fakes import FakeKandjiApi, StepClock, device

from kandji_snapshots.collect.collector import SnapshotCollector
from kandji_snapshots.collect.refresh import (
    BudgetExhausted,
    PreviousRows,
    RequestBudget,
    plan_refresh,
    with_snapshot_id,
)
from kandji_snapshots.snapshots.device_rows import SnapshotFormatError, row_keys
from kandji_snapshots.snapshots.storage import MemoryObjectStore
from kandji_snapshots.snapshots.table_io import iter_lines, iter_rows


def test_budget_never_hands_out_more_than_the_cap():
    budget = RequestBudget(per_run=3)
    for _ in range(3):
        budget.take()
    with pytest.raises(BudgetExhausted, match="budget of 3"):
        budget.take()
    assert budget.spent == 3


def test_budget_leaves_the_hourly_reserve_to_other_integrations():
    budget = RequestBudget(per_run=100, hourly_reserve=50)
    budget.observe_remaining_hour(52)
    budget.take()
    budget.take()  # 50 left: exactly the reserve
    with pytest.raises(BudgetExhausted, match="reserve of 50"):
        budget.take()
    assert budget.affordable(retry_slack=0) == 0


def test_affordable_takes_the_tightest_limit_and_keeps_slack():
    now = [0.0]
    budget = RequestBudget(per_run=1000, requests_per_second=10, deadline=30.0, clock=lambda: now[0])
    assert budget.affordable(retry_slack=0) == 298  # 30 s at 10/s, minus 2 for retries
    assert RequestBudget().affordable() is None


def test_plan_prefers_new_then_checked_in_then_oldest():
    devices = [device("a", last_check_in="2026-11-23T09:00:00Z"),  # checked in after its fetch
               device("b", last_check_in="2026-11-20T00:00:00Z"),  # old data, no check-in since
               device("c"),  # new
               device("d", last_check_in="2026-11-20T00:00:00Z")]  # older data, no check-in since
    fetched = {"a": "2026-11-22T00:00:00.000000Z", "b": "2026-11-22T00:00:00.000000Z",
               "d": "2026-11-21T00:00:00.000000Z"}
    assert plan_refresh(devices, fetched, 1) == {"c"}
    assert plan_refresh(devices, fetched, 2) == {"c", "a"}
    assert plan_refresh(devices, fetched, 3) == {"c", "a", "d"}
    assert plan_refresh(devices, fetched, None) == {"a", "b", "c", "d"}


def test_carried_line_keeps_everything_but_the_snapshot_id():
    line = b'{"snapshot_id":"20261123T100000Z","device_id":"d1","fetched_at":"2026-11-23T10:00:01.000000Z","x":1}\n'
    carried = with_snapshot_id(line, "20261123T110000Z")
    assert carried == line.replace(b"20261123T100000Z", b"20261123T110000Z")
    assert row_keys(carried) == ("d1", "2026-11-23T10:00:01.000000Z")


def test_previous_rows_walks_in_device_order():
    lines = [f'{{"snapshot_id":"20261123T100000Z","device_id":"{d}","fetched_at":null}}\n'.encode()
             for d in ("a", "a", "c", "d")]
    rows = PreviousRows(iter(lines))
    assert len(rows.take("a")) == 2 and rows.take("b") == [] and len(rows.take("d")) == 1 and rows.take("e") == []


def _fleet(ids):
    api = FakeKandjiApi([device(i) for i in ids],
                        {i: {"mdm": {"mdm_enabled": "True"}} for i in ids},
                        {i: [{"app_name": "Zoom", "bundle_id": "us.zoom.xos", "path": "/A/zoom.app", "version": "6"}]
                         for i in ids})
    return api


def test_budget_short_run_carries_devices_forward_and_drops_none():
    ids = [f"d{n}" for n in range(10)]
    store, clock = MemoryObjectStore(), StepClock()
    first = SnapshotCollector(_fleet(ids), store, clock=clock).collect()
    api = _fleet(ids + ["new"])
    budget = RequestBudget(per_run=7)  # 1 list call + 3 devices at 2 requests each
    api_calls = api.calls
    second = SnapshotCollector(_BudgetedApi(api, budget), store, clock=clock, budget=budget).collect()
    doc = second.document
    assert budget.spent <= 7 and len(api_calls) <= 7
    assert doc["device_count"] == 11 and doc["pending_devices"] == 0
    assert doc["refreshed_devices"] + doc["carried_devices"] == 11
    assert "new" in {device_id for endpoint, device_id in api_calls if endpoint == "details"}  # new first
    details = {row["device_id"]: row for row in iter_rows(store, second.table_keys("device_details"))}
    assert set(details) == set(ids) | {"new"}
    old = {row["device_id"]: row for row in iter_rows(store, first.table_keys("device_details"))}
    carried = [d for d in ids if details[d]["fetched_at"] == old[d]["fetched_at"]]
    assert len(carried) == doc["carried_devices"]
    for device_id in carried:  # carried rows are the previous rows, under the new snapshot id
        assert {**old[device_id], "snapshot_id": doc["snapshot_id"]} == details[device_id]
    apps = list(iter_lines(store, second.table_keys("device_apps")))
    assert len(apps) == 11


def test_no_previous_data_and_no_budget_keeps_the_device_with_unknown_details():
    store = MemoryObjectStore()
    budget = RequestBudget(per_run=5)  # the list call, 2 kept for retries, one device
    api = _fleet(["a", "b", "c"])
    manifest = SnapshotCollector(_BudgetedApi(api, budget), store, clock=StepClock(), budget=budget).collect()
    details = list(iter_rows(store, manifest.table_keys("device_details")))
    assert [row["device_id"] for row in details] == ["a", "b", "c"]
    assert manifest.document["pending_devices"] == 2
    assert sum(row["fetched_at"] is None for row in details) == 2


class _BudgetedApi:
    """Charges the budget per call, as KandjiClient does before each request."""

    def __init__(self, api, budget):
        self._api, self._budget, self.host = api, budget, api.host

    def list_devices(self):
        self._budget.take()
        return self._api.list_devices()

    def device_details(self, device_id):
        self._budget.take()
        return self._api.device_details(device_id)

    def device_apps(self, device_id):
        self._budget.take()
        return self._api.device_apps(device_id)

    def iter_prism_category(self, category):  # the fake's token has no Prism permission: 403, nothing read
        return self._api.iter_prism_category(category)


def test_unknown_details_are_pending_not_carried_and_get_fetched_first_next_run():
    store, clock = MemoryObjectStore(), StepClock()
    ids = ["a", "b", "c", "d"]
    first_budget = RequestBudget(per_run=5)
    first = SnapshotCollector(_BudgetedApi(_fleet(ids), first_budget), store, clock=clock,
                              budget=first_budget).collect()
    assert (first.document["refreshed_devices"], first.document["pending_devices"]) == (1, 3)
    second_budget = RequestBudget(per_run=9)  # the list call, 2 for retries, three devices
    second = SnapshotCollector(_BudgetedApi(_fleet(ids), second_budget), store, clock=clock,
                               budget=second_budget).collect()
    doc = second.document
    assert (doc["refreshed_devices"], doc["carried_devices"], doc["pending_devices"]) == (3, 1, 0)


def test_row_keys_read_fetched_at_or_its_absence_from_the_prefix():
    never = b'{"snapshot_id":"20261123T100000Z","device_id":"d\\"2","fetched_at":null}\n'
    assert row_keys(never) == ('d\\"2', None)  # the id as written, escapes and all, as row_head gives it
    with pytest.raises(SnapshotFormatError, match="no fetched_at"):
        row_keys(b'{"snapshot_id":"20261123T100000Z","device_id":"d1","name":"x"}\n')
