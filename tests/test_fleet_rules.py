"""The pipeline's domain rules on realistic fleets (the simulator's, every platform and its quirks) collected
and diffed in memory (fleet_api.FleetApi, MemoryObjectStore, MemoryPublisher): what changed is published,
once, with its severity; what only checked in is not; the real shapes land in typed columns; a FileVault
flip is published once across a rolling refresh. The same flows through HTTP and moto, on small fleets:
test_pipeline_end_to_end.py and test_posture.py."""

from __future__ import annotations

from demo_changes import assert_exactly_the_demo_changes
from fleet_api import FleetApi
from real_shapes import assert_prism_rows_are_the_served_ones, assert_typed, real_shapes_fleet

from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.diff.publisher import MemoryPublisher
from kandji_snapshots.diff.rules import FILEVAULT_FIELDS
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.storage import MemoryObjectStore
from kandji_snapshots.snapshots.table_io import iter_rows
from simulator import Fleet


class Runs:
    """Collect a fleet in memory and diff each snapshot as the differ handler would; `run` returns what it published."""

    def __init__(self, fleet: Fleet, **api_options):
        self.fleet = fleet
        self.kandji = FleetApi(fleet, **api_options)
        self.store = MemoryObjectStore()
        self.publisher = MemoryPublisher()
        self.hour = 9
        self.manifest: Manifest | None = None

    def run(self, **collect_options) -> list[dict]:
        self.hour += 1
        self.manifest = self.kandji.collect(self.store, hour=self.hour, **collect_options)
        return self.diff()

    def diff(self) -> list[dict]:
        before = len(self.publisher.messages)
        SnapshotDiffer(self.store, self.publisher).run(self.manifest.snapshot_id)
        return self.publisher.events[before:]

    def rows(self, table: str) -> list[dict]:
        return list(iter_rows(self.store, self.manifest.table_keys(table)))


def changes_of(events: list[dict]) -> list[dict]:
    return [event for event in events if event["change_type"] != "snapshot_summary"]


def test_on_a_fleet_of_every_platform_exactly_the_changes_made_are_published_once_and_a_check_in_publishes_nothing():
    fleet = Fleet.generate(200, seed=21)
    runs = Runs(fleet)
    first = runs.run()
    assert [m["change_type"] for m in first] == ["snapshot_summary"]  # first snapshot: summary only
    assert first[0]["first_snapshot"] is True and first[0]["device_count"] == 200

    made = fleet.apply_demo_changes()  # six changes on six devices, and every device checks in
    events = runs.run()
    assert_exactly_the_demo_changes(events, made, fleet)
    assert runs.diff() == []  # the same snapshot diffed again (a redelivered trigger): nothing twice

    fleet.check_in_all()  # only check-ins, disk use, lost devices' locations, app inventory
    [summary] = runs.run()
    assert summary["change_type"] == "snapshot_summary"
    assert summary["event_count"] == 0 and summary["first_snapshot"] is False


def test_the_real_shapes_of_every_platform_arrive_typed_and_prism_apps_give_the_per_device_rows():
    fleet = real_shapes_fleet(200, seed=31)
    runs = Runs(fleet)
    runs.run()
    assert_typed(fleet, runs.rows("devices"), runs.rows("device_details"), runs.rows("device_apps"))
    fleet.check_in_all()  # everything that moves, moves: check-ins, disk use, lost devices, app inventory
    [summary] = runs.run(apps_source="prism")  # and the second run reads apps from Prism
    assert summary["change_type"] == "snapshot_summary" and summary["event_count"] == 0
    assert runs.manifest.document["apps_source"] == "prism"
    assert_prism_rows_are_the_served_ones(fleet, runs.rows("device_apps"))


def test_a_known_mutation_set_on_every_platform_publishes_exactly_those_events():
    fleet = real_shapes_fleet(120, seed=32)
    ids = fleet.device_ids(ordering=None)
    by_platform: dict[str, list[str]] = {}
    for device_id in ids:
        by_platform.setdefault(fleet.platform(device_id), []).append(device_id)
    runs = Runs(fleet)
    runs.run()
    macs = by_platform["Mac"]
    fv = next(d for d in macs if fleet.details(d)["filevault"]["filevault_enabled"] is True)
    fleet.set_filevault(fv, False)
    phone = next(d for d in by_platform["iPhone"] if not fleet.list_item(d).get("lost_mode_status")
                 and "lost_mode_status" in fleet.list_item(d))
    fleet.set_lost_mode(phone, True)
    updated_mac, removed_app_mac = [d for d in macs if d != fv][:2]
    app = next(a for a in fleet.apps(updated_mac) if a.get("bundle_id") == "com.apple.Safari"
               or a.get("bundle_id", "").startswith("com.microsoft"))
    fleet.update_app(updated_mac, app["bundle_id"], app["version"] + ".1", path=app["path"])
    gone_app = next(a for a in fleet.apps(removed_app_mac) if a.get("bundle_id"))
    fleet.remove_app(removed_app_mac, gone_app["bundle_id"], path=gone_app["path"])
    added = fleet.enroll("Windows")
    removed = by_platform["Android"][0]
    fleet.remove(removed)
    os_device = by_platform["iPad"][0]
    fleet.update_os(os_device, "18.0")
    fleet.check_in_all()
    events = changes_of(runs.run())
    found = sorted((e["change_type"], e["device_id"], e["severity"]) for e in events)
    assert found == sorted([
        ("device_changed", fv, "high"),
        ("device_changed", phone, "high"),
        ("app_updated", updated_mac, "info"),
        ("app_removed", removed_app_mac, "info"),
        ("device_added", added, "info"),
        ("device_removed", removed, "high"),
        ("device_changed", os_device, "info"),
    ])
    by_device = {(e["change_type"], e["device_id"]): e for e in events}

    def reasons(event):
        return {c["reason"] for c in event["changes"] if c["severity"] == "high"}

    assert reasons(by_device[("device_changed", fv)]) == {"FileVault turned off"}
    assert reasons(by_device[("device_changed", phone)]) == {"lost mode enabled"}
    fv_fields = {c["field"] for c in by_device[("device_changed", fv)]["changes"]}
    assert "volumes.Macintosh HD.encrypted" not in fv_fields  # the sealed system volume never was
    assert "volumes.Macintosh HD - Data.encrypted" in fv_fields
    os_fields = {c["field"] for c in by_device[("device_changed", os_device)]["changes"]}
    # One OS update, reported once: by the list; the details that only catch up with it are left out.
    assert "os_version" in os_fields and not {"general.os_version", "general.system_version"} & os_fields
    assert by_device[("device_added", added)]["platform"] == "Windows"


# --- FileVault across a rolling refresh: Prism reports a flip every run, the details when re-read ----------

BUDGET_SHORT_OF_THE_FLEET = 80  # requests per run: Prism and the device list, and details for part of the fleet


def filevault_changes(events: list[dict], device_id: str) -> list[tuple]:
    return [(c["field"], c["before"], c["after"], c["severity"]) for event in events
            if event.get("device_id") == device_id for c in event.get("changes", []) if c["field"] in FILEVAULT_FIELDS]


def test_a_filevault_flip_prism_published_is_not_published_again_when_the_details_catch_up():
    fleet = Fleet.generate(120, seed=33)
    runs = Runs(fleet)
    runs.run(budget=BUDGET_SHORT_OF_THE_FLEET)
    assert runs.manifest.document["pending_devices"] > 0  # rolling refresh: details could not cover the fleet
    fetched = {row["device_id"] for row in runs.rows("device_details") if row["fetched_at"]}
    # Macs whose details the next run carries (new devices go first) with FileVault on.
    flip, back = [d for d in fleet.device_ids() if d in fetched and fleet.platform(d) == "Mac"
                  and fleet.details(d)["filevault"]["filevault_enabled"] is True][:2]
    for device_id in (flip, back):
        fleet.set_filevault(device_id, False)
    second = runs.run(budget=BUDGET_SHORT_OF_THE_FLEET)  # Prism sees it, the details are carried
    carried = {row["device_id"]: row for row in runs.rows("device_details") if row["device_id"] in (flip, back)}
    # Carried, still on: else the details, not Prism, would have seen the flip first.
    assert [carried[d]["filevault"]["filevault_enabled"] for d in (flip, back)] == [True, True]
    third = runs.run()  # the details are read again and say off too
    runs.kandji.prism.set(back, "filevault", status=False)  # Prism still says off...
    fleet.set_filevault(back, True)  # ...when the details see it back on: a new change
    fourth = runs.run()
    for device_id in (flip, back):
        assert filevault_changes(second, device_id) == [("posture.filevault.status", True, False, "high")]
        assert filevault_changes(third, device_id) == []  # the same flip, already published
    # The details read again: each flipped Mac's event says what else they caught up with, nothing high.
    assert {e["device_id"] for e in third if e["change_type"] == "device_changed"} >= {flip, back}
    assert not any(change.get("severity") == "high" for event in third for change in event.get("changes", []))
    assert filevault_changes(fourth, back) == [("filevault.filevault_enabled", False, True, "info")]
    assert filevault_changes(fourth, flip) == []
