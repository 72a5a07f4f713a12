"""The differ's domain: real snapshots (SnapshotCollector + a fake fleet) in memory, an in-memory publisher."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest
from differ_fixtures import FIRST, SECOND, FakeFleet, FlakyPublisher, Run, app, default_apps, diff
from kandji_fakes import StepClock

from kandji_snapshots.collect.collector import SnapshotCollector
from kandji_snapshots.collect.refresh import RequestBudget
from kandji_snapshots.diff.differ import SnapshotDiffer, SnapshotNotCommitted, diff_snapshots
from kandji_snapshots.diff.events import app_identity
from kandji_snapshots.diff.field_changes import _INVENTORY_NOISE, without_inventory_noise
from kandji_snapshots.diff.publisher import MAX_BATCH_BYTES, MemoryPublisher, PublishError
from kandji_snapshots.snapshots.catalog import load_manifest
from kandji_snapshots.snapshots.device_rows import row_head
from kandji_snapshots.snapshots.layout import changes_key, published_marker_prefix
from kandji_snapshots.snapshots.normalize import app_rows, encode_row
from kandji_snapshots.snapshots.storage import MemoryObjectStore
from kandji_snapshots.snapshots.table_io import iter_rows


def only_event(run: Run) -> dict:
    assert len(run.events) == 1, run.events
    return run.events[0]


def fields(event: dict) -> dict:
    return {change["field"]: (change["before"], change["after"]) for change in event["changes"]}


# --- what is (not) a change ---------------------------------------------------------------

def test_a_fleet_that_only_checked_in_yields_zero_events():
    run = diff(lambda fleet: None)
    assert run.events == []
    [summary] = run.summaries
    assert summary["event_count"] == 0 and summary["severity"] == "info" and not summary["suppressed"]
    assert summary["first_snapshot"] is False and summary["previous_snapshot_id"] == FIRST
    assert set(summary["counts"].values()) == {0}


def test_check_in_values_that_need_escaping_are_still_ignored():
    def mutate(fleet):
        fleet.details["id-001"]["general"]["time_since_boot"] = 'up "3" days \\ 2 hours'

    assert diff(mutate).events == []


def test_device_added_carries_its_apps_and_no_app_events():
    event = only_event(diff(lambda fleet: fleet.add("id-100", device_name="New Mac")))
    assert event["change_type"] == "device_added" and event["severity"] == "info"
    assert (event["device_id"], event["device_name"], event["serial_number"], event["platform"]) == (
        "id-100", "New Mac", "C02ID-100", "Mac")
    expected = sorted(default_apps(), key=lambda item: (item["bundle_id"], item["path"]))
    assert event["apps"] == [{"app_name": a["app_name"], "bundle_id": a["bundle_id"], "version": a["version"],
                              "path": a["path"]} for a in expected]
    assert "changes" not in event and "app" not in event


def test_device_removed_is_high_and_lists_its_apps():
    event = only_event(diff(lambda fleet: fleet.remove("id-002")))
    assert event["change_type"] == "device_removed" and event["severity"] == "high"
    assert event["device_id"] == "id-002" and len(event["apps"]) == 3


def test_device_changed_reports_dotted_fields_from_both_tables():
    def mutate(fleet):
        fleet.devices["id-001"]["device_name"] = "Renamed"
        fleet.devices["id-001"]["kandji_new_field"] = "surprise"  # unknown field: lands in `extra`
        details = fleet.details["id-001"]
        details["general"]["device_name"] = "Renamed"
        details["volumes"][0]["encrypted"] = "No"
        details["users"]["regular_users"][0]["admin"] = "No"
        details["installed_profiles"].append({"name": "VPN", "uuid": "c3", "verified": "verified"})

    event = only_event(diff(mutate))
    assert event["change_type"] == "device_changed" and event["severity"] == "info"
    assert event["device_name"] == "Renamed"
    assert fields(event) == {
        "device_name": ("Mac id-001", "Renamed"),
        "extra.kandji_new_field": (None, "surprise"),  # untyped fields one by one
        "general.device_name": ("Mac id-001", "Renamed"),
        "volumes.Macintosh HD.encrypted": (True, False),
        "users.regular_users.Ann.admin": ("Yes", "No"),
        "installed_profiles.VPN": (None, '{"name":"VPN","uuid":"c3","verified":"verified"}'),
    }
    assert [change["field"] for change in event["changes"]][:2] == ["device_name", "extra.kandji_new_field"]
    assert {change["severity"] for change in event["changes"]} == {"info"}


def test_ignore_fields_setting_adds_to_the_defaults():
    def rename(fleet):
        fleet.devices["id-001"]["device_name"] = "Renamed"
        fleet.details["id-001"]["general"]["device_name"] = "Renamed"

    assert diff(rename, ignore_fields=("device_name", "general.*_name")).events == []
    assert len(diff(rename).events) == 1


def test_ignoring_one_of_two_fields_with_the_same_key_name_still_reports_the_other():
    def agent_reinstalled(fleet):
        fleet.details["id-001"]["kandji_agent"]["install_date"] = "2026-11-23T09:30:00Z"

    def mdm_reinstalled(fleet):
        fleet.details["id-001"]["mdm"]["install_date"] = "2026-11-23T09:30:00Z"

    assert fields(only_event(diff(agent_reinstalled, ignore_fields=("mdm.install_date",)))) == {
        "kandji_agent.install_date": (None, "2026-11-23T09:30:00.000000Z")}
    assert diff(mdm_reinstalled, ignore_fields=("mdm.install_date",)).events == []


# --- apps -------------------------------------------------------------------------------------

def test_app_installed_updated_removed_in_identity_order():
    def mutate(fleet):
        apps = fleet.apps["id-001"]
        apps[0]["version"] = "121.0"  # Chrome
        apps.pop(2)  # Slack
        apps.append(app("Firefox", "org.mozilla.firefox", "128.0"))

    events = diff(mutate).events
    assert [(event["change_type"], event["app"]["bundle_id"]) for event in events] == [
        ("app_installed", "org.mozilla.firefox"), ("app_updated", "com.google.Chrome"),
        ("app_removed", "com.tinyspeck.slackmacgap")]
    installed, updated, removed = (event["app"] for event in events)
    assert installed == {"app_name": "Firefox", "bundle_id": "org.mozilla.firefox",
                         "path": "/Applications/Firefox.app", "version": "128.0", "previous_version": None}
    assert (updated["version"], updated["previous_version"]) == ("121.0", "120.0")
    assert (removed["version"], removed["previous_version"]) == (None, "4.36")
    assert {event["device_id"] for event in events} == {"id-001"}
    assert {event["severity"] for event in events} == {"info"}


def test_two_copies_of_one_bundle_at_different_paths_are_two_apps():
    user_copy = "/Users/ann/Applications/Google Chrome.app"
    fleet = FakeFleet.of(1)
    fleet.apps["id-000"].append(app("Google Chrome", "com.google.Chrome", "119.0", path=user_copy))

    def mutate(fleet):
        apps = fleet.apps["id-000"]
        apps[-1]["version"] = "121.0"  # only the user's copy is updated
        apps.pop(0)  # and the /Applications copy is deleted

    events = diff(mutate, fleet=fleet).events
    assert [(event["change_type"], event["app"]["path"], event["app"]["version"]) for event in events] == [
        ("app_updated", user_copy, "121.0"), ("app_removed", "/Applications/Google Chrome.app", None)]


def test_apps_without_bundle_id_are_identified_by_name_and_path():
    fleet = FakeFleet.of(1)
    fleet.apps["id-000"] = [app("Tool", "", "1.0", path="/opt/tool"), app("Other", "", "2.0", path="/opt/other")]

    def mutate(fleet):
        fleet.apps["id-000"][0]["version"] = "1.1"
        fleet.apps["id-000"][1]["app_name"] = "Renamed"

    events = diff(mutate, fleet=fleet).events
    assert sorted((event["change_type"], event["app"]["app_name"]) for event in events) == [
        ("app_installed", "Renamed"), ("app_removed", "Other"), ("app_updated", "Tool")]
    assert app_identity({"bundle_id": "", "app_name": "Tool", "path": "/opt/tool"}) == ("", "Tool", "/opt/tool")


def test_app_metadata_without_a_new_version_is_not_an_update():
    def mutate(fleet):
        fleet.apps["id-001"][0]["source"] = "App Store"

    assert diff(mutate).events == []


# --- severity ------------------------------------------------------------------------------

def _set(table, *path_and_value):
    *path, value = path_and_value

    def mutate(fleet):
        target = getattr(fleet, table)["id-001"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


@pytest.mark.parametrize(("mutate", "field", "reason"), [
    (_set("details", "filevault", "filevault_enabled", False), "filevault.filevault_enabled",
     "FileVault turned off"),
    (_set("devices", "agent_installed", False), "agent_installed", "Kandji agent removed"),
    (_set("details", "kandji_agent", "agent_installed", "False"), "kandji_agent.agent_installed",
     "Kandji agent removed"),
    (_set("devices", "mdm_enabled", False), "mdm_enabled", "MDM disabled"),
    (_set("details", "mdm", "mdm_enabled", "False"), "mdm.mdm_enabled", "MDM disabled"),
    (_set("devices", "is_missing", True), "is_missing", "device went missing"),
    (_set("devices", "lost_mode_status", "ENABLED"), "lost_mode_status", "lost mode enabled"),
    (_set("details", "lost_mode", "lost_mode_status", "ENABLED"), "lost_mode.lost_mode_status",
     "lost mode enabled"),
    (_set("details", "recovery_information", "recovery_lock_enabled", False),
     "recovery_information.recovery_lock_enabled", "recovery lock turned off"),
    (_set("details", "activation_lock", "device_activation_lock_enabled", False),
     "activation_lock.device_activation_lock_enabled", "activation lock changed"),
    (_set("details", "activation_lock", "user_activation_lock_enabled", True),
     "activation_lock.user_activation_lock_enabled", "activation lock changed"),
    (_set("details", "activation_lock", "bypass_code_failed", True), "activation_lock.bypass_code_failed",
     "activation lock bypass code failed"),
    (_set("devices", "os_version", "14.4.1"), "os_version", "OS downgraded"),
    (_set("details", "general", "os_version", "13.6.7"), "general.os_version", "OS downgraded"),
])
def test_security_relevant_changes_are_high(mutate, field, reason):
    event = only_event(diff(mutate))
    assert event["change_type"] == "device_changed" and event["severity"] == "high"
    [change] = [change for change in event["changes"] if change["field"] == field]
    assert change["severity"] == "high" and change["reason"] == reason


@pytest.mark.parametrize(("mutate", "field"), [
    (_set("devices", "os_version", "14.10"), "os_version"),  # an upgrade, compared as a version, not as text
    (_set("details", "general", "os_version", "15.0"), "general.os_version"),
    (_set("details", "filevault", "filevault_prk_escrowed", False), "filevault.filevault_prk_escrowed"),
    (_set("devices", "lost_mode_status", "DISABLED"), "lost_mode_status"),  # "" -> DISABLED: still off
    (_set("devices", "tags", ["eng", "laptop"]), "tags"),
])
def test_other_changes_are_info(mutate, field):
    event = only_event(diff(mutate))  # every case is a change: the severity checks hold on something
    assert field in fields(event)
    assert event["severity"] == "info"
    assert [change["severity"] for change in event["changes"]] == ["info"] * len(event["changes"])


def test_firmware_password_removed_is_high():
    fleet = FakeFleet.of(3)
    fleet.details["id-001"]["recovery_information"]["firmware_password_exist"] = True
    event = only_event(diff(_set("details", "recovery_information", "firmware_password_exist", False), fleet=fleet))
    assert event["severity"] == "high" and event["changes"][0]["reason"] == "firmware password removed"


def _windows(fleet):
    """id-001 becomes a Windows PC: list fields like an Apple device's, details sections missing or {}."""
    fleet.devices["id-001"].update(platform="Windows", os_version="10.0.22631", agent_installed=False,
                                   agent_version="", supplemental_build_version="22631.3880")
    fleet.details["id-001"] = {"general": {"device_id": "id-001", "platform": "Windows",
                                           "os_version": "10.0.22631", "supplemental_build_version": "22631.3880"},
                               "mdm": {"mdm_enabled": "True"}, "activation_lock": {}, "network": {},
                               "kandji_agent": {}, "volumes": []}
    fleet.apps["id-001"] = []
    return fleet


@pytest.mark.parametrize(("mutate", "field", "reason"), [
    (_set("devices", "supplemental_build_version", "22631.3737"), "supplemental_build_version",
     "OS build downgraded"),
    (_set("details", "general", "supplemental_build_version", "22631.3737"), "general.supplemental_build_version",
     "OS build downgraded"),
    (_set("devices", "mdm_enabled", False), "mdm_enabled", "MDM disabled"),
    (_set("details", "mdm", "mdm_enabled", "False"), "mdm.mdm_enabled", "MDM disabled"),
    (_set("devices", "lost_mode_status", "ENABLED"), "lost_mode_status", "lost mode enabled"),
])
def test_windows_and_android_get_the_same_rules_where_they_report_the_field(mutate, field, reason):
    event = only_event(diff(mutate, fleet=_windows(FakeFleet.of(3))))
    assert event["platform"] == "Windows" and event["severity"] == "high"
    assert [(c["field"], c["reason"]) for c in event["changes"] if c["severity"] == "high"] == [(field, reason)]


def test_a_windows_build_update_and_apple_rapid_security_responses_are_info():
    upgrade = only_event(diff(_set("devices", "supplemental_build_version", "22631.4037"),
                              fleet=_windows(FakeFleet.of(3))))
    assert upgrade["severity"] == "info"
    fleet = FakeFleet.of(3)
    fleet.devices["id-001"]["supplemental_build_version"] = "22F770820d"  # Apple: a build, not a number
    rsr = only_event(diff(_set("devices", "supplemental_build_version", "22F82"), fleet=fleet))
    assert rsr["severity"] == "info"


def _lost(fleet):
    fleet.devices["id-001"]["lost_mode_status"] = "ENABLED"
    fleet.details["id-001"]["lost_mode"] = {
        "lost_mode_status": "ENABLED", "enabled_by": "it@example.com", "enable_status_at": "2026-11-22T08:00:00Z",
        "disable_status": "", "disabled_by": "", "disable_status_at": "", "lock_screen_message": "Lost",
        "lock_screen_phone_number": "+1 555 0100", "lock_screen_footnote": "",
        "last_location_status": "ACKNOWLEDGED", "last_location_status_at": "2026-11-22T09:00:00Z",
        "last_location": {"latitude": "37.331686", "longitude": "-122.030656"},
        "last_location_at": "2026-11-22T09:00:00Z", "sound_status": "", "sound_status_at": "2026-11-22T09:00:00Z"}
    return fleet


def test_a_lost_device_moving_is_not_a_change():
    def move(fleet):
        lost = fleet.details["id-001"]["lost_mode"]
        lost.update(last_location={"latitude": "37.4", "longitude": "-122.1"},
                    last_location_at="2026-11-23T10:30:00Z", last_location_status_at="2026-11-23T10:30:00Z",
                    sound_status_at="2026-11-23T10:31:00Z")
        # A value that does not fit its column lands in extra, and is ignored there just the same.
        fleet.details["id-002"]["lost_mode"] = {"last_location": {"latitude": "unknown"}}

    fleet = _lost(FakeFleet.of(3))
    fleet.details["id-002"]["lost_mode"] = {"last_location": {"latitude": "n/a"}}
    assert diff(move, fleet=fleet).events == []


def test_lost_mode_turned_on_in_details_and_list_is_one_high_event():
    event = only_event(diff(_lost))
    assert event["severity"] == "high"
    reasons = {c["field"]: c.get("reason") for c in event["changes"]}
    assert reasons["lost_mode_status"] == "lost mode enabled"
    assert "lost_mode.lost_mode_status" not in reasons  # the details only repeat the list: reported once
    assert not {"lost_mode.last_location.latitude", "lost_mode.last_location_at",
                "lost_mode.sound_status_at"} & set(reasons)  # where it is: ignored
    assert "lost_mode.lock_screen_phone_number" in reasons  # how it is configured: reported


def test_untyped_fields_are_compared_one_by_one_and_patterns_reach_inside_extra():
    def mutate(fleet):
        fleet.details["id-001"]["security_information"]["firewall_enabled"] = False  # no column: extra
        fleet.details["id-001"]["security_information"]["gatekeeper"] = {"status": "on", "checked": "x"}

    event = only_event(diff(mutate))
    assert fields(event) == {"extra.security_information.firewall_enabled": (True, False),
                             "extra.security_information.gatekeeper.status": (None, "on"),
                             "extra.security_information.gatekeeper.checked": (None, "x")}
    assert event["severity"] == "info"
    narrowed = only_event(diff(mutate, ignore_fields=("extra.security_information.gatekeeper",)))
    assert fields(narrowed) == {"extra.security_information.firewall_enabled": (True, False)}
    for pattern in ("extra", "extra.*", "security_information", "*.firewall_enabled,*.gatekeeper.*"):
        assert diff(mutate, ignore_fields=tuple(pattern.split(","))).events == [], pattern


def test_an_unchanged_untyped_field_next_to_a_changed_one_is_not_reported():
    def mutate(fleet):
        fleet.details["id-001"]["security_information"]["gatekeeper"] = "on"

    fleet = FakeFleet.of(3)
    event = only_event(diff(mutate, fleet=fleet))
    assert [c["field"] for c in event["changes"]] == ["extra.security_information.gatekeeper"]


def test_a_macs_sealed_system_volume_not_encrypted_is_normal():
    fleet = FakeFleet.of(3)
    for details in fleet.details.values():
        details["volumes"] = [
            {"name": "Macintosh HD", "format": "APFS", "identifier": "disk1s5s1", "percent_used": "9%",
             "capacity": "228.27 GB", "available": "180 GB", "encrypted": "No"},
            {"name": "Macintosh HD - Data", "format": "APFS (Encrypted)", "identifier": "disk1s1",
             "percent_used": "19%", "capacity": "228.27 GB", "available": "180 GB", "encrypted": "Yes"}]
    run = diff(lambda fleet: None, fleet=fleet)
    assert run.events == [] and run.summaries[0]["severity"] == "info"
    # and FileVault turned off on such a Mac is reported once, by the FileVault rule
    def fv_off(fleet):
        fleet.details["id-001"]["filevault"]["filevault_enabled"] = False
        fleet.details["id-001"]["volumes"][1].update(format="APFS", encrypted="No")
    event = only_event(diff(fv_off, fleet=fleet))
    assert [c["reason"] for c in event["changes"] if c["severity"] == "high"] == ["FileVault turned off"]


def test_turning_filevault_back_on_is_info():
    fleet = FakeFleet.of(1)
    fleet.details["id-000"]["filevault"]["filevault_enabled"] = False
    event = only_event(diff(_set_on("id-000"), fleet=fleet))
    assert event["severity"] == "info"


def _set_on(device_id):
    def mutate(fleet):
        fleet.details[device_id]["filevault"]["filevault_enabled"] = True
    return mutate


def test_an_event_is_as_severe_as_its_most_severe_change():
    def mutate(fleet):
        fleet.devices["id-001"]["device_name"] = "Renamed"
        fleet.devices["id-001"]["mdm_enabled"] = False

    event = only_event(diff(mutate))
    assert event["severity"] == "high"
    assert sorted(change["severity"] for change in event["changes"]) == ["high", "info"]


# --- devices a snapshot could not read ------------------------------------------------------

def test_a_device_skipped_by_the_current_snapshot_is_not_removed():
    assert diff(lambda fleet: fleet.unenrolled.add("id-001")).events == []


def test_a_device_skipped_by_the_previous_snapshot_is_not_added():
    fleet = FakeFleet.of(3)
    fleet.unenrolled.add("id-002")  # 404 mid-run in the first snapshot
    run = diff(lambda fleet: fleet.unenrolled.clear(), fleet=fleet)
    assert run.events == []
    assert [item["device_id"] for item in load_manifest(run.store, FIRST).document["skipped_devices"]] == ["id-002"]


def test_a_new_device_skipped_by_a_404_on_its_first_run_is_announced_added_when_first_read():
    store, fleet = MemoryObjectStore(), FakeFleet.of(2)
    fleet.collect(store, hour=10)
    fleet.add("id-009")
    fleet.unenrolled.add("id-009")  # new, and its details answer 404: nothing known to carry
    fleet.collect(store, hour=11)
    fleet.unenrolled.clear()
    fleet.collect(store, hour=12)
    publisher = MemoryPublisher()
    for snapshot_id in (SECOND, "20261123T120000Z"):
        SnapshotDiffer(store, publisher).run(snapshot_id)
    assert [item["carried"] for item in load_manifest(store, SECOND).document["skipped_devices"]] == [False]
    assert [(event["change_type"], event["snapshot_id"], len(event["apps"])) for event in publisher.events
            if event["change_type"] != "snapshot_summary"] == [("device_added", "20261123T120000Z", 3)]


def one_device_budget() -> RequestBudget:
    """Enough requests for one device's details and apps (plus the budget's retry slack)."""
    return RequestBudget(per_run=4)


def test_devices_not_fetched_by_a_rolling_refresh_are_unknown_not_changed():
    store = MemoryObjectStore()
    fleet = FakeFleet.of(3)
    # The first snapshot fetches one device; the other two are listed, details and apps unknown.
    SnapshotCollector(fleet, store, clock=StepClock(_at(10)), budget=one_device_budget()).collect()
    fleet.check_in()
    fleet.collect(store, hour=11)
    publisher = MemoryPublisher()
    SnapshotDiffer(store, publisher).run(SECOND)
    assert load_manifest(store, FIRST).document["pending_devices"] == 2
    # Nothing changed; the two devices' apps, unknown until now, are said once (not as app_installed).
    assert [(event["change_type"], event.get("device_id"), len(event.get("apps") or []))
            for event in publisher.events] == [
        ("device_apps_first_read", "id-001", 3), ("device_apps_first_read", "id-002", 3), ("snapshot_summary", None, 0)]


def test_carried_rows_are_no_change():
    store = MemoryObjectStore()
    fleet = FakeFleet.of(3)
    fleet.collect(store, hour=10)
    fleet.check_in()
    for details in fleet.details.values():
        details["filevault"]["filevault_enabled"] = False  # seen only where the device is fetched again
    SnapshotCollector(fleet, store, clock=StepClock(_at(11)), budget=one_device_budget()).collect()
    assert load_manifest(store, SECOND).document["carried_devices"] == 2
    publisher = MemoryPublisher()
    SnapshotDiffer(store, publisher).run(SECOND)
    assert [event["change_type"] for event in publisher.events] == ["device_changed", "snapshot_summary"]


def test_an_os_downgrade_seen_in_the_list_before_the_details_is_reported_once_under_rolling_refresh():
    store = MemoryObjectStore()
    fleet = FakeFleet.of(3)
    fleet.collect(store, hour=10)
    fleet.check_in()
    fleet.devices["id-001"]["os_version"] = fleet.details["id-001"]["general"]["os_version"] = "13.6"
    # One device refreshed (id-000, the oldest data): id-001's list row is new, its details carried.
    SnapshotCollector(fleet, store, clock=StepClock(_at(11)), budget=one_device_budget()).collect()
    fleet.collect(store, hour=12)  # everything read: general.os_version catches up with the list
    publisher = MemoryPublisher()
    for snapshot_id in (SECOND, "20261123T120000Z"):
        SnapshotDiffer(store, publisher).run(snapshot_id)
    changed = [event for event in publisher.events if event["change_type"] == "device_changed"]
    assert [(event["snapshot_id"], event["severity"], [change["field"] for change in event["changes"]])
            for event in changed] == [(SECOND, "high", ["os_version"])]


def _at(hour: int) -> datetime:
    return datetime(2026, 11, 23, hour, tzinfo=timezone.utc)


# --- events: ids, order, file ---------------------------------------------------------------

def busy_mutation(fleet):
    fleet.remove("id-000")
    fleet.add("id-005")
    fleet.devices["id-001"]["os_version"] = "14.6"
    fleet.details["id-001"]["general"]["os_version"] = "14.6"
    fleet.apps["id-001"][1]["version"] = "6.1"
    fleet.apps["id-002"].append(app("Firefox", "org.mozilla.firefox", "128.0"))


def test_events_come_in_device_then_change_type_order():
    events = diff(busy_mutation).events
    assert [(event["device_id"], event["change_type"]) for event in events] == [
        ("id-000", "device_removed"), ("id-001", "device_changed"), ("id-001", "app_updated"),
        ("id-002", "app_installed"), ("id-005", "device_added")]
    for event in events:
        assert list(event)[:10] == ["schema_version", "event_id", "change_type", "severity", "snapshot_id",
                                    "previous_snapshot_id", "device_id", "device_name", "serial_number", "platform"]
        assert event["schema_version"] == 1 and event["snapshot_id"] == SECOND


def test_same_snapshots_give_the_same_event_ids():
    first, second = diff(busy_mutation), diff(busy_mutation)
    assert first.publisher.events == second.publisher.events
    ids = [event["event_id"] for event in first.publisher.events]
    assert len(set(ids)) == len(ids)
    again = list(diff_snapshots(first.store, load_manifest(first.store, FIRST), load_manifest(first.store, SECOND)))
    assert [event["event_id"] for event in again] == ids[:-1]


def test_changes_file_holds_exactly_the_published_events():
    run = diff(busy_mutation)
    assert run.changes_file() == run.events
    summary = run.summaries[0]
    assert summary["changes_uri"] == f"memory://{changes_key(SECOND)}"
    assert summary["counts"] == {"device_added": 1, "device_removed": 1, "device_changed": 1,
                                 "device_apps_first_read": 0, "app_installed": 1, "app_updated": 1, "app_removed": 0}
    assert summary["severity_counts"] == {"info": 4, "high": 1} and summary["severity"] == "high"
    assert summary["device_count"] == 3 and summary["published_events"] == 5


def test_message_attributes_carry_type_severity_and_platform():
    run = diff(busy_mutation)
    published = [json.loads(message.body)["change_type"] for message in run.publisher.messages]
    assert sorted(published) == ["app_installed", "app_updated", "device_added", "device_changed", "device_removed",
                                 "snapshot_summary"]
    for message in run.publisher.messages:
        event = json.loads(message.body)
        expected_platform = "all" if event["change_type"] == "snapshot_summary" else "Mac"
        assert message.attributes == {"change_type": event["change_type"], "severity": event["severity"],
                                      "platform": expected_platform}


def test_an_event_too_large_for_sns_is_shrunk_not_dropped():
    many_apps = [app(f"App {index:04d} " + "x" * 80, f"com.example.app{index:04d}", "1.0") for index in range(2500)]
    run = diff(lambda fleet: fleet.add("id-100", apps=many_apps))
    [message] = [m for m in run.publisher.messages if json.loads(m.body)["change_type"] == "device_added"]
    published = json.loads(message.body)
    assert message.size <= MAX_BATCH_BYTES
    assert published["truncated"] is True and published["app_count"] == 2500 and "apps" not in published
    assert published["changes_uri"].endswith(changes_key(SECOND)) and published["device_id"] == "id-100"
    [full] = run.changes_file()
    assert len(full["apps"]) == 2500 and full["event_id"] == published["event_id"]


# --- running: first snapshot, flood guard, idempotency ---------------------------------------

def test_first_snapshot_publishes_only_a_summary():
    store = MemoryObjectStore()
    FakeFleet.of(2).collect(store, hour=10)
    publisher = MemoryPublisher()
    result = SnapshotDiffer(store, publisher).run(FIRST)
    [summary] = publisher.events
    assert summary["change_type"] == "snapshot_summary" and summary["first_snapshot"] is True
    assert summary["previous_snapshot_id"] is None and summary["device_count"] == 2 and summary["event_count"] == 0
    assert result.first_snapshot and result.published_messages == 1
    assert list(iter_rows(store, [changes_key(FIRST)])) == []


def test_more_events_than_the_limit_publish_only_the_high_severity_ones_and_the_summary():
    def mass_update(fleet):
        for apps in fleet.apps.values():
            apps[0]["version"] = "121.0"
        fleet.devices["id-000"]["agent_installed"] = False

    run = diff(mass_update, max_events_per_run=2)
    [agent_removed, summary] = run.publisher.events
    assert (agent_removed["change_type"], agent_removed["severity"]) == ("device_changed", "high")
    assert summary["suppressed"] is True and summary["event_count"] == 4 and summary["published_events"] == 1
    assert summary["severity"] == "high" and run.publisher.messages[-1].attributes["severity"] == "high"
    assert summary["noisy_field"] is None  # app updates, no one field; and agent_installed is never "noise"
    assert len(run.changes_file()) == 4  # everything is still on record
    assert run.result.suppressed and run.result.published_messages == 2


def test_more_high_severity_events_than_the_limit_publish_only_the_summary():
    def mass_removal(fleet):
        for device in fleet.devices.values():
            device["agent_installed"] = False

    run = diff(mass_removal, max_events_per_run=2)
    [summary] = run.publisher.events
    assert summary["suppressed"] is True and summary["event_count"] == 3 and summary["published_events"] == 0


def test_exactly_the_limit_is_published():
    def two_updates(fleet):
        fleet.apps["id-000"][0]["version"] = "121.0"
        fleet.apps["id-001"][0]["version"] = "121.0"

    run = diff(two_updates, max_events_per_run=2)
    assert len(run.events) == 2 and not run.summaries[0]["suppressed"]


def test_a_redelivered_trigger_publishes_nothing_twice():
    run = diff(busy_mutation)
    published = len(run.publisher.messages)
    again = SnapshotDiffer(run.store, run.publisher).run(SECOND)
    assert len(run.publisher.messages) == published
    assert again.already_done and again.published_messages == 0 and again.event_count == 5
    assert f"{published_marker_prefix(SECOND)}done.json" in run.store.objects


def many_new_devices(fleet):
    for index in range(25):
        fleet.add(f"id-{100 + index}")


def test_a_run_that_failed_half_way_is_finished_by_its_retry_without_repeats():
    run = Run(many_new_devices, publisher=FlakyPublisher(fail_on_batch=2))
    with pytest.raises(PublishError, match="simulated SNS outage"):
        run.run()
    assert len(run.publisher.messages) == 10 and run.summaries == []
    progress = json.loads(run.store.get(f"{published_marker_prefix(SECOND)}progress.json"))
    assert progress["published_events"] == 10

    run.publisher.fail_on_batch = None
    run.run()
    ids = [event["event_id"] for event in run.events]
    assert len(ids) == 25 and len(set(ids)) == 25
    assert run.events == run.changes_file() and len(run.summaries) == 1
    assert run.result.published_events == 15 and run.summaries[0]["published_events"] == 25


def test_entries_sns_accepted_in_a_failed_batch_are_not_published_again():
    run = Run(many_new_devices, publisher=FlakyPublisher(fail_on_batch=2, accepted=4))
    with pytest.raises(PublishError):
        run.run()
    run.publisher.fail_on_batch = None
    run.run()
    ids = [event["event_id"] for event in run.events]
    assert len(ids) == 25 and len(set(ids)) == 25 and run.events == run.changes_file()


def test_a_retry_reuses_the_changes_file_of_the_failed_attempt():
    run = Run(many_new_devices, publisher=FlakyPublisher(fail_on_batch=1))
    with pytest.raises(PublishError):
        run.run()
    written = run.changes_file()
    run.fleet.remove("id-100")  # even if the world moved on, the retry publishes what was recorded
    run.publisher.fail_on_batch = None
    run.run()
    assert run.events == written


def test_a_failed_summary_is_published_by_the_retry():
    run = Run(lambda fleet: fleet.add("id-100"), publisher=FlakyPublisher(fail_on_batch=2))
    with pytest.raises(PublishError):
        run.run()
    run.publisher.fail_on_batch = None
    run.run()
    assert [event["change_type"] for event in run.publisher.events] == ["device_added", "snapshot_summary"]


def test_diffing_a_snapshot_that_was_never_committed_says_so():
    with pytest.raises(SnapshotNotCommitted, match="never committed"):
        SnapshotDiffer(MemoryObjectStore(), MemoryPublisher()).run(SECOND)


def test_large_tables_in_several_parts_are_read_in_order():
    store = MemoryObjectStore()
    fleet = FakeFleet.of(12)
    fleet.collect(store, hour=10, rows_per_part=5)
    fleet.check_in()
    fleet.apps["id-007"][0]["version"] = "121.0"
    fleet.collect(store, hour=11, rows_per_part=7)
    assert len(load_manifest(store, SECOND).table_keys("device_apps")) > 1
    events = list(diff_snapshots(store, load_manifest(store, FIRST), load_manifest(store, SECOND)))
    assert [(event["device_id"], event["change_type"]) for event in events] == [("id-007", "app_updated")]


def test_list_values_are_reported_as_json_text():
    event = only_event(diff(_set("devices", "tags", ["eng", "laptop"])))
    assert fields(event) == {"tags": ('["eng"]', '["eng","laptop"]')}


# --- the previous snapshot on an earlier day -----------------------------------------------------

@pytest.mark.parametrize(("first", "second"), [
    ((23, 23), (24, 0)),  # 23:00 and the next run just after midnight UTC
    ((20, 10), (24, 10)),  # a schedule paused for four days
])
def test_a_diff_finds_the_previous_snapshot_on_an_earlier_day(first, second):
    store, fleet = MemoryObjectStore(), FakeFleet.of(3)
    before = fleet.collect(store, day=first[0], hour=first[1]).snapshot_id
    fleet.check_in()
    fleet.details["id-001"]["filevault"]["filevault_enabled"] = False
    after = fleet.collect(store, day=second[0], hour=second[1]).snapshot_id
    assert before[:8] != after[:8]
    publisher = MemoryPublisher()
    result = SnapshotDiffer(store, publisher).run(after)
    assert result.previous_snapshot_id == before and not result.first_snapshot
    [event] = [event for event in publisher.events if event["change_type"] != "snapshot_summary"]
    assert (event["device_id"], event["severity"]) == ("id-001", "high")


def test_a_new_app_inventory_that_only_renumbers_and_restamps_is_compared_without_parsing(monkeypatch):
    # Kandji renumbers app rows and restamps their dates at every inventory: no event, and no app row parsed.
    from kandji_snapshots.diff import differ as differ_module

    parsed: list[bytes] = []
    real = differ_module._apps_by_identity

    def spy(lines):
        lines = list(lines)
        parsed.extend(lines)
        return real(lines)

    monkeypatch.setattr(differ_module, "_apps_by_identity", spy)

    def new_inventory(fleet):
        for number, inventory_app in enumerate(fleet.apps["id-001"]):
            inventory_app.update(app_id=str(9000 + number), creation_date="2026-11-23 11:00:00.123000+00:00",
                       modification_date="2026-11-23 11:00:00.123000+00:00")

    assert diff(new_inventory).events == [] and parsed == []
    updated = only_event(diff(lambda fleet: (new_inventory(fleet), fleet.apps["id-001"][0].update(version="9.9"))))
    assert updated["change_type"] == "app_updated" and updated["app"]["version"] == "9.9"
    assert len(parsed) == 2  # only the one app whose version moved, before and after


def app_body(**fields) -> bytes:
    """An app row's body as the collector writes it: encoded in schema order, without its per-snapshot prefix."""
    [row] = app_rows([{**app("Slack", "com.tinyspeck.slackmacgap", "4.36"), **fields}], "20261123T100000Z", "id-001",
                     "2026-11-23T10:00:05.000000Z")
    line = encode_row(row)
    return line[row_head(line, True)[1]:]


INVENTORY = {"app_id": "10017015", "creation_date": "2024-07-23T11:38:07.441454Z",
             "modification_date": "2024-07-23T11:38:07.441454Z"}
REINVENTORIED = {"app_id": "20017999", "creation_date": "2026-11-23 11:00:00.123000+00:00",
                 "modification_date": None}


@pytest.mark.parametrize("changed, same", [
    ({}, True),  # renumbered and restamped only
    ({"version": "4.37"}, False), ({"path": "/Applications/Slack 2.app"}, False), ({"app_name": "Slack Beta"}, False),
    ({"bundle_size": "1"}, False), ({"signature": "Developer ID Application: Slack"}, False),
])
def test_the_inventory_cut_removes_exactly_the_renumbered_and_restamped_values(changed, same):
    before, after = app_body(**INVENTORY), app_body(**REINVENTORIED, **changed)
    assert (without_inventory_noise(before) == without_inventory_noise(after)) is same
    for body in (before, after):  # the slice and the key-by-key cut agree on what they leave
        assert what_is_left(without_inventory_noise(body)) == what_is_left(_INVENTORY_NOISE.strip(body, 0))


def what_is_left(cut: bytes) -> dict:
    """The fields a cut body still holds (cutting leaves stray commas behind; no value here holds one)."""
    return json.loads(b"{" + re.sub(rb",{2,}", b",", cut).lstrip(b",").replace(b",}", b"}"))


def test_the_inventory_cut_falls_back_to_cutting_by_key_for_rows_in_another_column_order():
    body = app_body(**INVENTORY)
    row = json.loads(b"{" + body)
    reordered = json.dumps(dict(reversed(row.items())), separators=(",", ":")).encode()[1:]
    kept = {key: value for key, value in row.items() if key not in INVENTORY}
    assert what_is_left(without_inventory_noise(reordered)) == kept
