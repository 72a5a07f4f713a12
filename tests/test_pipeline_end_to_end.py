"""The whole pipeline as deployed, on this machine: the collector and differ handlers, the
Kandji simulator over HTTP, and moto's S3, Secrets Manager, SNS and SQS. A 1,100-device fleet
(four device-list pages, every platform) changes between two collections; subscribers must
receive exactly those changes, once each, with the right severity."""

from __future__ import annotations

import json

from aws_helpers import create_secret, manifests, read_rows
from conftest import load_handler
from handler_pipeline import TOKEN, collect_and_diff, start

from kandji_snapshots.snapshots.normalize import app_rows
from simulator import Fleet, KandjiSimulator


def test_subscribers_receive_exactly_the_fleet_changes(deployment, lambda_context, monkeypatch):
    fleet = Fleet.generate(1100, seed=21)
    sim = start(fleet, monkeypatch)
    try:
        collect_and_diff(lambda_context)
        first = deployment("all")
        assert [m["change_type"] for m in first] == ["snapshot_summary"]  # first snapshot: summary only
        assert first[0]["first_snapshot"] is True and first[0]["device_count"] == 1100

        made = fleet.apply_demo_changes()
        trigger = collect_and_diff(lambda_context)
        events = deployment("all")
        high = deployment("high")
        load_handler("differ").lambda_handler(trigger, lambda_context)  # EventBridge delivers it again
        redelivered = deployment("all")
    finally:
        sim.stop()

    changes = [e for e in events if e["change_type"] != "snapshot_summary"]
    found = {(e["change_type"], e["device_id"], e["severity"]) for e in changes}
    assert found == {
        ("device_added", made["enrolled"]["device_id"], "info"),
        ("device_removed", made["removed"]["device_id"], "high"),
        ("device_changed", made["os_updated"]["device_id"], "info"),
        ("app_installed", made["app_installed"]["device_id"], "info"),
        ("app_updated", made["app_updated"]["device_id"], "info"),
        ("device_changed", made["filevault_disabled"]["device_id"], "high"),
    }
    assert len(changes) == len(found) == len({e["event_id"] for e in changes})  # none duplicated
    by_type = {(e["change_type"], e["device_id"]): e for e in changes}
    os_event = by_type[("device_changed", made["os_updated"]["device_id"])]
    assert {"field": "os_version", "before": made["os_updated"]["before"],
            "after": made["os_updated"]["after"]}.items() <= next(
        c for c in os_event["changes"] if c["field"] == "os_version").items()
    fv_event = by_type[("device_changed", made["filevault_disabled"]["device_id"])]
    assert any(c["field"] == "filevault.filevault_enabled" and c["before"] is True and c["after"] is False
               for c in fv_event["changes"])
    updated = by_type[("app_updated", made["app_updated"]["device_id"])]["app"]
    assert (updated["bundle_id"], updated["previous_version"], updated["version"]) == (
        made["app_updated"]["bundle_id"], made["app_updated"]["before"], made["app_updated"]["after"])
    assert by_type[("app_installed", made["app_installed"]["device_id"])]["app"]["bundle_id"] == \
        "com.example.demo-tool"
    added = by_type[("device_added", made["enrolled"]["device_id"])]
    assert len(added["apps"]) == fleet.app_count(made["enrolled"]["device_id"])
    [summary] = [e for e in events if e["change_type"] == "snapshot_summary"]
    assert summary["event_count"] == 6 and summary["suppressed"] is False
    # The filtered subscriber got the two high events and the (high) summary, nothing else.
    assert sorted(e["change_type"] for e in high) == ["device_changed", "device_removed", "snapshot_summary"]
    assert redelivered == []


def test_a_fleet_that_only_checked_in_again_yields_a_summary_with_zero_changes(deployment, lambda_context,
                                                                                monkeypatch):
    fleet = Fleet.generate(300, seed=22)
    sim = start(fleet, monkeypatch)
    try:
        collect_and_diff(lambda_context)
        deployment("all")
        fleet.check_in_all()
        collect_and_diff(lambda_context)
        messages = deployment("all")
    finally:
        sim.stop()
    assert [m["change_type"] for m in messages] == ["snapshot_summary"]
    assert messages[0]["event_count"] == 0 and messages[0]["first_snapshot"] is False


# --- the real response shapes (../shared/kandji-api.md, "Real responses") ----------------------------

# Prism has no app_id, bundle size or VPP columns; Prism-only descriptive keys go to extra.
PER_DEVICE_ONLY = ("app_id", "bundle_size", "app_store_vendable", "device_based_vpp", "extra")


def snapshot_rows(snapshot_id: str, table: str) -> list[dict]:
    [manifest] = [m for m in manifests() if m["snapshot_id"] == snapshot_id]
    return read_rows(manifest["tables"][table]["keys"])


def real_shapes_fleet(count: int, seed: int) -> Fleet:
    """Every platform, Windows and Android included, and some devices already lost (moving)."""
    fleet = Fleet.generate(count, seed=seed)
    lost = [d for d in fleet.device_ids() if fleet.platform(d) in ("iPhone", "iPad", "Android")][:4]
    for device_id in lost:
        fleet.set_lost_mode(device_id, True)
    return fleet


def test_real_shapes_arrive_typed_and_a_check_in_only_rerun_publishes_nothing(deployment, lambda_context,
                                                                             monkeypatch):
    fleet = real_shapes_fleet(400, seed=31)
    sim = KandjiSimulator(fleet, token=TOKEN, prism_page_rows=25).start()  # Prism: short, null-cursor pages
    monkeypatch.setenv("KANDJI_SECRET_ID", create_secret(json.dumps({"api_url": sim.api_url, "api_token": TOKEN})))
    try:
        first = collect_and_diff(lambda_context)["detail"]["object"]["key"].split("/")[3]
        deployment("all")
        fleet.check_in_all()  # everything that moves, moves: check-ins, disk use, lost devices, app inventory
        monkeypatch.setenv("KANDJI_APPS_SOURCE", "prism")  # and the second run reads apps from Prism
        second = collect_and_diff(lambda_context)["detail"]["object"]["key"].split("/")[3]
        messages = deployment("all")
    finally:
        sim.stop()
    assert [m["change_type"] for m in messages] == ["snapshot_summary"] and messages[0]["event_count"] == 0

    # Every device, detail and app of the real shapes in typed columns: nothing left in extra.
    devices, details = snapshot_rows(first, "devices"), snapshot_rows(first, "device_details")
    apps = snapshot_rows(first, "device_apps")
    assert len(devices) == len(details) == 400 and len(apps) == sum(fleet.app_count(d) for d in fleet.device_ids())
    assert [row for row in devices + details + apps if row["extra"] is not None] == []
    assert {row["platform"] for row in devices} == {"Mac", "iPhone", "iPad", "AppleTV", "Windows", "Android"}
    platform = {row["device_id"]: row["platform"] for row in devices}
    macs = [row for row in details if platform[row["device_id"]] == "Mac"]
    # Both boot volumes of a real Mac: the sealed system volume reports encrypted "No" (normal).
    assert all({v["name"]: v["encrypted"] for v in row["volumes"]}.get("Macintosh HD") is False
               and "Macintosh HD - Data" in {v["name"] for v in row["volumes"]} for row in macs)
    assert all(row["recovery_information"]["password_escrowed"] is not None for row in macs)
    assert any(row["mdm"]["mdm_enabled_user"] for row in macs)
    assert any(row["apple_business_manager"] for row in macs)
    assert all(row["security_information"]["remote_desktop_enabled"] is not None for row in macs
               if row["security_information"])
    assert any(row["general"]["supplemental_build_version"] for row in details
               if platform[row["device_id"]] == "Windows")
    lost = [row["lost_mode"] for row in details if row["lost_mode"] and row["lost_mode"]["lost_mode_status"]]
    assert len(lost) >= 4 and all(isinstance(x["last_location"]["latitude"], float) for x in lost)
    phones = [row for row in details if platform[row["device_id"]] in ("iPhone", "iPad")]
    assert all(isinstance(row["cellular"]["cellular_technology"], int) for row in phones)
    assert all(row["app_name"] and row["creation_date"] for row in apps)

    # Prism gives the per-device rows, column for column (the columns Prism has).
    prism_apps = snapshot_rows(second, "device_apps")
    served = [row for device_id in sorted(fleet.device_ids())
              for row in app_rows(fleet.apps(device_id), "S", device_id, "T")]

    def shared(rows):
        return [{k: v for k, v in row.items() if k not in ("snapshot_id", "fetched_at", *PER_DEVICE_ONLY)}
                for row in rows]

    assert shared(prism_apps) == shared(served)


def test_a_known_mutation_set_publishes_exactly_those_events(deployment, lambda_context, monkeypatch):
    fleet = real_shapes_fleet(300, seed=32)
    ids = fleet.device_ids(ordering=None)
    by_platform: dict[str, list[str]] = {}
    for device_id in ids:
        by_platform.setdefault(fleet.platform(device_id), []).append(device_id)
    sim = start(fleet, monkeypatch)
    try:
        collect_and_diff(lambda_context)
        deployment("all")
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
        collect_and_diff(lambda_context)
        events = [e for e in deployment("all") if e["change_type"] != "snapshot_summary"]
    finally:
        sim.stop()
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
