"""Which committed snapshot comes before another: today's, yesterday's, or any earlier one (a paused schedule)."""

from __future__ import annotations

import json

import pytest

from kandji_snapshots.snapshots.catalog import (
    MANIFEST_SCHEMA_VERSION,
    Manifest,
    committed_snapshot_ids,
    latest_snapshot_id,
    load_manifest,
    load_manifest_key,
    manifest_exists,
    previous_snapshot_id,
    write_manifest,
)
from kandji_snapshots.snapshots.storage import MemoryObjectStore


class ListingStore(MemoryObjectStore):
    """Remembers every prefix listed: which days the lookup read."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[str] = []

    def list_keys(self, prefix, start_after=None):
        self.listed.append(prefix)
        return super().list_keys(prefix, start_after)


def store_with(*snapshot_ids: str) -> ListingStore:
    store = ListingStore()
    for snapshot_id in snapshot_ids:
        day = f"{snapshot_id[0:4]}-{snapshot_id[4:6]}-{snapshot_id[6:8]}"
        document = {"schema_version": MANIFEST_SCHEMA_VERSION, "snapshot_id": snapshot_id, "tables": {}}
        store.put(f"snapshots/manifests/dt={day}/{snapshot_id}/manifest.json", json.dumps(document).encode())
    store.put("snapshots/devices/dt=2026-11-23/20261123T100000Z.json.gz", b"")  # a part is no snapshot
    store.listed.clear()
    return store


def test_the_previous_snapshot_of_the_same_day():
    store = store_with("20261123T090000Z", "20261123T100000Z", "20261123T110000Z")
    assert previous_snapshot_id(store, "20261123T110000Z") == "20261123T100000Z"
    assert previous_snapshot_id(store, "20261123T100000Z") == "20261123T090000Z"  # never a later one
    assert store.listed[0] == "snapshots/manifests/dt=2026-11-23/"


def test_across_midnight_utc_the_previous_snapshot_is_yesterdays_last():
    store = store_with("20261122T120000Z", "20261122T235959Z", "20261123T000001Z")
    assert previous_snapshot_id(store, "20261123T000001Z") == "20261122T235959Z"
    assert store.listed == ["snapshots/manifests/dt=2026-11-23/", "snapshots/manifests/dt=2026-11-22/"]


def test_across_a_month_and_a_year_boundary():
    store = store_with("20261231T230000Z", "20270101T000500Z")
    assert previous_snapshot_id(store, "20270101T000500Z") == "20261231T230000Z"


def test_after_a_paused_schedule_the_previous_snapshot_is_days_back():
    store = store_with("20261101T080000Z", "20261115T100000Z", "20261123T100000Z")
    assert previous_snapshot_id(store, "20261123T100000Z") == "20261115T100000Z"
    assert store.listed[-1] == "snapshots/manifests/"  # two empty days, then one listing of every manifest


def test_the_first_snapshot_has_none_before_it():
    store = store_with("20261123T100000Z", "20261124T100000Z")
    assert previous_snapshot_id(store, "20261123T100000Z") is None


def test_committed_ids_are_oldest_first_and_ignore_other_keys():
    store = store_with("20261123T100000Z", "20261101T080000Z", "20261115T100000Z")
    store.put("snapshots/manifests/dt=2026-11-24/20261123T110000Z/manifest.json", b"{}")  # wrong day: not one
    store.put("snapshots/manifests/dt=2026-11-23/20261123T120000Z/manifest.json.partial", b"{}")
    assert committed_snapshot_ids(store) == ["20261101T080000Z", "20261115T100000Z", "20261123T100000Z"]
    assert latest_snapshot_id(store) == "20261123T100000Z"
    assert latest_snapshot_id(ListingStore()) is None


def test_a_lone_snapshot_lists_today_yesterday_and_everything():
    store = store_with("20261123T100000Z")
    assert previous_snapshot_id(store, "20261123T100000Z") is None
    assert store.listed == ["snapshots/manifests/dt=2026-11-23/", "snapshots/manifests/dt=2026-11-22/",
                            "snapshots/manifests/"]


class TypedStore(MemoryObjectStore):
    """Remembers the content type each key was written with."""

    def __init__(self) -> None:
        super().__init__()
        self.types: dict[str, str] = {}

    def put(self, key, body, *, content_type="application/octet-stream", content_encoding=None):
        self.types[key] = content_type
        super().put(key, body, content_type=content_type, content_encoding=content_encoding)


def test_a_manifest_round_trip():
    document = {"schema_version": MANIFEST_SCHEMA_VERSION, "snapshot_id": "20261123T100000Z",
                "tables": {"devices": {"rows": "3", "keys": ["a", "b"]}},
                "skipped_devices": [{"device_id": "id-9", "reason": "404"}]}
    store = TypedStore()
    key = write_manifest(store, Manifest(document))
    assert key == "snapshots/manifests/dt=2026-11-23/20261123T100000Z/manifest.json"
    assert store.types[key] == "application/json"
    manifest = load_manifest(store, "20261123T100000Z")
    assert manifest.document == document and manifest.snapshot_id == "20261123T100000Z"
    assert manifest.table_keys("devices") == ["a", "b"] and manifest.table_rows("devices") == 3
    assert manifest.skipped_device_ids == {"id-9"}
    assert manifest_exists(store, "20261123T100000Z") and not manifest_exists(store, "20261123T110000Z")


def test_a_file_that_is_not_a_manifest_is_refused_naming_its_schema_version():
    store = MemoryObjectStore()
    store.put("m.json", json.dumps({"schema_version": 2, "tables": {}}).encode())
    with pytest.raises(ValueError, match=r"m.json is not a kandji-snapshots manifest \(schema_version 2\)"):
        load_manifest_key(store, "m.json")
