"""A device whose details answer 404 for one run (a glitch, not an unenrolment), in memory: its last known rows
are carried, nothing is reported for it, and what changed meanwhile is reported once, by the next run that
reads it. The 404 over HTTP through both handlers: test_fault_tolerance.py (a device unenrolled mid-run)."""

from __future__ import annotations

from collections.abc import Callable

from differ_fixtures import FakeFleet

from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.diff.publisher import MemoryPublisher
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.storage import MemoryObjectStore
from kandji_snapshots.snapshots.table_io import iter_rows


def runs(fleet: FakeFleet) -> tuple[MemoryObjectStore, Callable[[int], tuple[Manifest, list[dict]]]]:
    """The store, and a function that collects `fleet` at `hour` and diffs it: (manifest, the run's device events)."""
    store, publisher = MemoryObjectStore(), MemoryPublisher()

    def run(hour: int) -> tuple[Manifest, list[dict]]:
        before = len(publisher.events)
        manifest = fleet.collect(store, hour=hour)
        SnapshotDiffer(store, publisher).run(manifest.snapshot_id)
        return manifest, [e for e in publisher.events[before:] if e["change_type"] != "snapshot_summary"]
    return store, run


def test_a_change_hidden_by_one_404_glitch_is_reported_once_by_the_next_complete_read():
    fleet = FakeFleet.of(20)  # no Prism posture: the details are the only source of FileVault here
    store, run = runs(fleet)
    run(10)
    fleet.unenrolled.add("id-007")  # details answer 404 once, and meanwhile FileVault is turned off
    fleet.details["id-007"]["filevault"]["filevault_enabled"] = False
    second, events = run(11)
    [item] = second.document["skipped_devices"]
    assert (item["device_id"], item["carried"]) == ("id-007", True)  # kept with its last known rows
    assert "id-007" in [row["device_id"] for row in iter_rows(store, second.table_keys("device_details"))]
    assert events == []  # nothing read, nothing reported, nothing removed
    fleet.unenrolled.clear()
    third, events = run(12)
    assert [(e["change_type"], e["device_id"], e["snapshot_id"], e["severity"]) for e in events] == [
        ("device_changed", "id-007", third.snapshot_id, "high")]
    assert "filevault.filevault_enabled" in [change["field"] for change in events[0]["changes"]]
    assert run(13)[1] == []  # once


def test_one_os_downgrade_is_reported_once_when_the_details_are_read_a_run_later():
    fleet = FakeFleet.of(12)
    _, run = runs(fleet)
    run(10)
    # A downgrade: list and details change together in Kandji...
    fleet.devices["id-003"]["os_version"] = fleet.details["id-003"]["general"]["os_version"] = "12.0.1"
    fleet.unenrolled.add("id-003")  # ...and this run reads the new list but not the details (kept from the last)
    second, events = run(11)
    fleet.unenrolled.clear()
    _, later = run(12)  # the details are read again: general.os_version catches up
    assert [(e["snapshot_id"], e["severity"], [change["field"] for change in e["changes"]])
            for e in events + later] == [(second.snapshot_id, "high", ["os_version"])]


def test_a_new_device_never_read_is_added_when_read_and_one_gone_before_its_read_is_removed_as_last_known():
    """A device first listed in a run that could not read it (404, nothing to carry) is unknown there: not
    added then, added by the run that reads it. One unlisted before any read is removed with what the
    manifest kept of it (its name and serial; its apps unknown), once."""
    fleet = FakeFleet.of(3)
    _, run = runs(fleet)
    run(10)
    fleet.add("id-005", device_name="Gone Mac", serial_number="C02GONE")
    fleet.add("id-008")
    fleet.unenrolled.update({"id-005", "id-008"})
    second, events = run(11)
    assert sorted((item["device_id"], item["carried"]) for item in second.document["skipped_devices"]) == [
        ("id-005", False), ("id-008", False)]
    assert events == []
    fleet.unenrolled.clear()
    fleet.remove("id-005")  # unenrolled for good: the 404 was its unenrolment
    _, events = run(12)
    assert [(e["change_type"], e["device_id"]) for e in events] == [("device_removed", "id-005"),
                                                                  ("device_added", "id-008")]
    removed = events[0]
    assert (removed["device_name"], removed["serial_number"], removed["platform"], removed.get("apps")) == (
        "Gone Mac", "C02GONE", "Mac", None)
    assert run(13)[1] == []  # once


def test_filevault_the_details_stop_reporting_is_unknown_not_a_change_without_prism():
    """Unknown is not false, with the details as the only FileVault source (no Prism posture): a
    `filevault_enabled` gone null is no change; reported off again, it is no news either."""
    fleet = FakeFleet.of(2)
    _, run = runs(fleet)
    run(10)
    fleet.details["id-001"]["filevault"]["filevault_enabled"] = None
    assert run(11)[1] == []
    fleet.details["id-001"]["filevault"]["filevault_enabled"] = True
    assert run(12)[1] == []
