"""The collector's domain with an in-memory Kandji API and store: no HTTP, no AWS."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from kandji_fakes import FakeKandjiApi, StepClock, auth_error, device

from kandji_snapshots.collect.collector import CollectorSettings, SnapshotCollector
from kandji_snapshots.errors import KandjiApiError, KandjiAuthError, SnapshotWriteError
from kandji_snapshots.snapshots.catalog import load_manifest
from kandji_snapshots.snapshots.storage import MemoryObjectStore
from kandji_snapshots.snapshots.table_io import iter_rows

IDS = [f"id-{index:03d}" for index in (5, 1, 3, 2, 4)]


def fleet():
    apps = {device_id: [{"app_name": "Zoom", "bundle_id": "us.zoom.xos", "path": "/Applications/zoom.us.app",
                         "version": "6.0"},
                        {"app_name": "Chrome", "bundle_id": "com.google.Chrome",
                         "path": "/Applications/Google Chrome.app", "version": "120.0"}]
            for device_id in IDS}
    details = {device_id: {"mdm": {"mdm_enabled": "True"}, "filevault": {"filevault_enabled": True}}
               for device_id in IDS}
    return FakeKandjiApi([device(device_id) for device_id in IDS], details, apps)


def collect(api, store=None, **settings):
    store = store if store is not None else MemoryObjectStore()
    manifest = SnapshotCollector(api, store, settings=CollectorSettings(**settings), clock=StepClock()).collect(
        correlation_id="2026-11-23T10:00:00Z")
    return manifest, store


def test_snapshot_is_complete_sorted_and_committed_by_its_manifest():
    manifest, store = collect(fleet(), max_workers=3)
    doc = manifest.document
    assert doc["snapshot_id"] == "20261123T100000Z" and doc["dt"] == "2026-11-23"
    assert doc["correlation_id"] == "2026-11-23T10:00:00Z" and doc["api_host"] == "acme.api.kandji.io"
    assert load_manifest(store, "20261123T100000Z").document == doc
    devices = list(iter_rows(store, manifest.table_keys("devices")))
    details = list(iter_rows(store, manifest.table_keys("device_details")))
    apps = list(iter_rows(store, manifest.table_keys("device_apps")))
    assert [row["device_id"] for row in devices] == sorted(IDS)
    assert [row["device_id"] for row in details] == sorted(IDS)
    assert [(row["device_id"], row["app_name"]) for row in apps] == [
        (device_id, name) for device_id in sorted(IDS) for name in ("Chrome", "Zoom")]
    assert {row["snapshot_id"] for row in devices + details + apps} == {"20261123T100000Z"}
    assert all(row["fetched_at"] for row in details + apps)
    assert details[0]["mdm"]["mdm_enabled"] is True
    assert {name: table["rows"] for name, table in doc["tables"].items()} == {
        "devices": 5, "device_details": 5, "device_apps": 10, "device_posture": 5}
    assert doc["device_count"] == 5 and doc["skipped_devices"] == []


def test_manifest_is_the_last_object_written():
    class RecordingStore(MemoryObjectStore):
        def __init__(self):
            super().__init__()
            self.order = []

        def put(self, key, body, **kwargs):
            self.order.append(key)
            super().put(key, body, **kwargs)

    manifest, store = collect(fleet(), store=RecordingStore())
    assert store.order[-1].endswith("/manifest.json") and len(store.order) == 6  # four tables, fingerprints, then it


def test_device_unenrolled_mid_run_is_skipped_and_recorded():
    api = fleet()
    api.unenrolled.add("id-003")
    manifest, store = collect(api)
    assert [item["device_id"] for item in manifest.document["skipped_devices"]] == ["id-003"]
    assert "404" in manifest.document["skipped_devices"][0]["reason"]
    for table in ("devices", "device_details", "device_apps"):
        assert "id-003" not in {row["device_id"] for row in iter_rows(store, manifest.table_keys(table))}
    assert manifest.document["device_count"] == 4 and manifest.document["listed_devices"] == 5


def test_failure_part_way_commits_nothing_and_removes_written_parts():
    api = fleet()
    api.fail_on["details:id-004"] = auth_error()
    store = MemoryObjectStore()
    with pytest.raises(KandjiAuthError):
        collect(api, store=store, rows_per_part=1)
    assert store.objects == {}  # no manifest, and no orphan parts for Athena to read


def test_failed_write_commits_nothing():
    class FailingStore(MemoryObjectStore):
        def put(self, key, body, **kwargs):
            if "device_apps" in key:
                raise SnapshotWriteError("Writing s3://b/k failed (AccessDenied)")
            super().put(key, body, **kwargs)

    store = FailingStore()
    with pytest.raises(SnapshotWriteError, match="AccessDenied"):
        collect(fleet(), store=store)
    assert not [key for key in store.objects if key.endswith("manifest.json")]


def test_empty_fleet_is_a_valid_snapshot():
    manifest, store = collect(FakeKandjiApi([]))
    assert manifest.document["device_count"] == 0
    assert {name: json.loads(json.dumps(table))["rows"] for name, table in manifest.document["tables"].items()} == {
        "devices": 0, "device_details": 0, "device_apps": 0, "device_posture": 0}


def test_a_device_list_that_collapses_is_refused_not_reported_removed():
    store = MemoryObjectStore()
    ids = [f"id-{n:03d}" for n in range(20)]
    clock = StepClock()
    SnapshotCollector(FakeKandjiApi([device(i) for i in ids]), store, clock=clock).collect()
    shrunk = FakeKandjiApi([device(i) for i in ids[:5]])  # a 200 with a quarter of the fleet
    with pytest.raises(KandjiApiError, match="shrank from 20 to 5 devices.*KANDJI_MAX_FLEET_DROP_PERCENT"):
        SnapshotCollector(shrunk, store, clock=clock).collect()
    assert len([key for key in store.objects if key.endswith("manifest.json")]) == 1
    allowed = SnapshotCollector(shrunk, store, clock=clock,
                                settings=CollectorSettings(max_fleet_drop_percent=100)).collect()
    assert allowed.document["device_count"] == 5


def test_skipped_devices_keep_their_platform_for_the_removal_event_later():
    api = fleet()
    api.unenrolled.add("id-002")
    manifest, _ = collect(api)
    assert manifest.document["skipped_devices"][0]["platform"] == "Mac"


def test_a_run_in_the_same_second_as_a_committed_snapshot_takes_the_next_second():
    store = MemoryObjectStore()

    class SameSecondClock:
        def __init__(self):
            self.now = datetime(2026, 11, 23, 10, 0, 0, 250_000, tzinfo=timezone.utc)

        def __call__(self):
            return self.now

    clock, slept = SameSecondClock(), []

    def sleep(seconds):
        slept.append(seconds)
        clock.now += timedelta(seconds=seconds)

    first = SnapshotCollector(fleet(), store, clock=clock, sleep=sleep).collect()
    second = SnapshotCollector(fleet(), store, clock=clock, sleep=sleep).collect()
    assert (first.snapshot_id, second.snapshot_id) == ("20261123T100000Z", "20261123T100001Z")
    assert slept == [0.75]


def test_a_listed_device_is_written_exactly_as_served():
    item = {"device_id": "id-007", "device_name": "Ann's iPhone", "model": "iPhone 15", "serial_number": "F2LX",
            "platform": "iPhone", "os_version": "18.1", "supplemental_build_version": "",
            "last_check_in": "2026-11-23 09:00:00+00:00", "user": {"email": "ann@example.com", "name": "Ann",
                                                                   "id": 12, "is_archived": "False"},
            "asset_tag": None, "blueprint_id": "bp-1", "blueprint_name": "Phones", "mdm_enabled": True,
            "agent_installed": "", "is_missing": "False", "is_removed": False,
            "first_enrollment": "2024-01-02T03:04:05.5Z", "last_enrollment": "2025-06-07 08:09:10 +0200",
            "lost_mode_status": "", "tags": ["sales", "emea"], "carrier": "Telco"}
    manifest, store = collect(FakeKandjiApi([item], {"id-007": {}}, {"id-007": []}))
    [row] = list(iter_rows(store, manifest.table_keys("devices")))
    assert row == {
        "snapshot_id": "20261123T100000Z", "device_id": "id-007", "device_name": "Ann's iPhone",
        "model": "iPhone 15", "serial_number": "F2LX", "platform": "iPhone", "os_version": "18.1",
        "supplemental_build_version": None, "supplemental_os_version_extra": None,
        "last_check_in": "2026-11-23T09:00:00.000000Z",
        "user": {"email": "ann@example.com", "name": "Ann", "id": "12", "is_archived": False},
        "asset_tag": None, "blueprint_id": "bp-1", "blueprint_name": "Phones",
        "mdm_enabled": True, "agent_installed": None, "is_missing": False, "is_removed": False, "agent_version": None,
        "first_enrollment": "2024-01-02T03:04:05.500000Z", "last_enrollment": "2025-06-07T06:09:10.000000Z",
        "lost_mode_status": None, "tags": ["emea", "sales"],  # a set: stored sorted
        "extra": '{"carrier":"Telco"}',
    }
