"""The tenant change rules (diff/tenant_changes.py) on hand-made snapshots in memory: threats and CVEs are
compared with the last snapshot that read them (a source not read is unknown, never "gone"), the alert
rules, what an event carries, and what the summary counts. End to end: test_tenant_alerts.py."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from tenant_fakes import detection

from kandji_snapshots.diff.events import SCHEMA_VERSION, event_id
from kandji_snapshots.diff.rules import HIGH, INFO
from kandji_snapshots.diff.tenant_changes import (
    CRITICAL_CVE_DETECTED,
    DEFAULT_SEVERITY,
    TENANT_SUMMARY,
    THREAT_DETECTED,
    THREAT_RELEASED,
    TenantChanges,
    severity_table,
)
from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.snapshots.catalog import Manifest, write_manifest
from kandji_snapshots.snapshots.storage import MemoryObjectStore


def snapshot(store: MemoryObjectStore, snapshot_id: str, previous: Manifest | None,
             **tables: list[dict[str, Any]]) -> Manifest:
    """A committed snapshot whose tenant part read exactly `tables` (any other source: not read, unknown)."""
    section: dict[str, Any] = {}
    for table, rows in tables.items():
        key = f"snapshots/tenant/{table}/{snapshot_id}.json.gz"
        store.put(key, gzip.compress(b"".join(json.dumps(row).encode() + b"\n" for row in rows)))
        section[table] = {"rows": len(rows), "keys": [key]}
    manifest = Manifest({"schema_version": 1, "snapshot_id": snapshot_id, "tables": {},
                         "previous_snapshot_id": previous.snapshot_id if previous else None,
                         "tenant": {"tables": section, "sources": {name: {"status": "read"} for name in tables},
                                    "audit": {"base": "20261123T000000Z"}}})
    write_manifest(store, manifest)
    return manifest


def threat(device_id: str, name: str, status: str = "QUARANTINED") -> dict[str, Any]:
    return {"device_id": device_id, "file_hash": f"hash-{name}", "threat_name": name, "status": status,
            "device_name": f"Mac {device_id}", "classification": "MALWARE"}


def alerts(store, previous: Manifest | None, current: Manifest, **kwargs) -> list[tuple[str, str]]:
    return [(event["change_type"], event["device_name"]) for event in TenantChanges(store, previous, current, **kwargs)
            if event["change_type"] != TENANT_SUMMARY]


def test_threats_unread_for_a_run_are_compared_with_their_last_read_when_read_again():
    """Unknown is not false: a run that did not read the threats reports nothing about them, and the next run
    that reads them compares with the last read, so a threat found meanwhile is published then, once."""
    store = MemoryObjectStore()
    first = snapshot(store, "20261123T090000Z", None, threats=[threat("d1", "Pirrit")])
    unread = snapshot(store, "20261123T100000Z", first)
    assert alerts(store, first, unread) == []
    again = snapshot(store, "20261123T110000Z", unread, threats=[threat("d1", "Pirrit"), threat("d2", "Adload")])
    assert alerts(store, unread, again) == [(THREAT_DETECTED, "Mac d2")]


def test_threats_read_for_the_first_time_are_history_not_news():
    """With no earlier read to compare with, what a source holds is unknown news: no threat event."""
    store = MemoryObjectStore()
    first = snapshot(store, "20261123T090000Z", None)
    second = snapshot(store, "20261123T100000Z", first, threats=[threat("d1", "Pirrit")])
    assert alerts(store, first, second) == [] and alerts(store, None, second) == []


def test_a_threat_released_from_quarantine_is_one_event_and_the_same_threat_seen_again_is_none():
    store = MemoryObjectStore()
    first = snapshot(store, "20261123T090000Z", None, threats=[threat("d1", "Pirrit"), threat("d2", "Pirrit")])
    second = snapshot(store, "20261123T100000Z", first,
                      threats=[threat("d1", "Pirrit", "RELEASED"), threat("d2", "Pirrit")])
    assert alerts(store, first, second) == [(THREAT_RELEASED, "Mac d1")]
    third = snapshot(store, "20261123T110000Z", second,
                     threats=[threat("d1", "Pirrit", "RELEASED"), threat("d2", "Pirrit")])
    assert alerts(store, second, third) == []


def test_a_threat_event_says_what_and_where_with_names_inert_and_bounded():
    store = MemoryObjectStore()
    first = snapshot(store, "20261123T090000Z", None, threats=[])
    found = {**threat("d1", "Adload"), "device_name": "Mac\n[high] fake", "file_path": "/tmp/" + "a" * 500,
             "device_serial_number": "C02X", "released_by": "admin", "release_note": "false positive",
             "detection_date": "2026-11-23T08:00:00Z", "date_of_release": "2026-11-23T09:00:00Z"}
    second = snapshot(store, "20261123T100000Z", first, threats=[found])
    [event] = TenantChanges(store, first, second)
    assert event == {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id(first.snapshot_id, second.snapshot_id, THREAT_DETECTED, "",
                             ("d1\x1fhash-Adload\x1fAdload",)),
        "change_type": THREAT_DETECTED, "severity": HIGH, "snapshot_id": second.snapshot_id,
        "previous_snapshot_id": first.snapshot_id, "device_id": "", "device_name": event["device_name"],
        "serial_number": None, "platform": "tenant", "threat": event["threat"]}
    assert "\n" not in event["device_name"] and event["device_name"].startswith("Mac")
    assert event["threat"]["threat_name"] == "Adload" and event["threat"]["device_id"] == "d1"
    assert event["threat"]["status"] == "QUARANTINED" and len(event["threat"]["file_path"]) <= 120
    assert {name: event["threat"][name] for name in ("classification", "file_hash", "device_serial_number",
                                                      "released_by", "release_note", "detection_date",
                                                      "date_of_release")} == {
        "classification": "MALWARE", "file_hash": "hash-Adload", "device_serial_number": "C02X",
        "released_by": "admin", "release_note": "false positive", "detection_date": "2026-11-23T08:00:00Z",
        "date_of_release": "2026-11-23T09:00:00Z"}
    unnamed = {**threat("d2", "Bundlore"), "device_name": ""}
    third = snapshot(store, "20261123T110000Z", second, threats=[found, unnamed])
    assert alerts(store, second, third) == [(THREAT_DETECTED, None)]  # an empty name is no name


def test_a_critical_or_exploited_cve_newly_detected_is_one_event_with_its_devices_and_the_rest_are_counted():
    """A CVE not detected in the last read, with CVSS >= 9 or on CISA's KEV list, is one event listing the
    devices it reached; other new CVEs are only counted; a CVE seen before is no news; an unread source none."""
    store = MemoryObjectStore()
    first = snapshot(store, "20261123T090000Z", None,
                     vulnerability_detections=[detection("d1", "CVE-OLD", 9.8)])
    unread = snapshot(store, "20261123T100000Z", first)
    assert alerts(store, first, unread) == []
    now = [detection("d1", "CVE-OLD", 9.8), detection("d2", "CVE-OLD", 9.8),  # seen before: not new
           detection("d1", "CVE-AAA-LOW", 8.9),  # sorts first and is not critical: the next ones still count
           {**detection("d2", "CVE-CRIT", 9.0), "device_name": "Amy"},  # critical at exactly 9.0
           {**detection("d1", "CVE-CRIT", 7.0), "device_name": "Zed"},
           {**detection("d3", "CVE-KEV", None), "cve_link": "https://x/" + "k" * 400}, detection("d3", "CVE-LOW", 8.9)]
    second = snapshot(store, "20261123T110000Z", unread, vulnerability_detections=now,
                      vulnerabilities=[{"cve_id": "CVE-KEV", "kev_score": 1}, {"cve_id": "CVE-LOW", "kev_score": 0}])
    events = list(TenantChanges(store, unread, second))
    cves = {event["cve"]["cve_id"]: event["cve"] for event in events if event["change_type"] == CRITICAL_CVE_DETECTED}
    assert [event["device_name"] for event in events if event["change_type"] == CRITICAL_CVE_DETECTED] == [
        "CVE-CRIT", "CVE-KEV"]
    assert cves["CVE-CRIT"]["cvss_score"] == 9.0 and cves["CVE-CRIT"]["kev"] is False
    assert cves["CVE-CRIT"]["device_count"] == 2 and cves["CVE-CRIT"]["devices"] == [  # in device order
        {"device_id": "d1", "device_name": "Zed"}, {"device_id": "d2", "device_name": "Amy"}]
    assert cves["CVE-KEV"]["kev"] is True and cves["CVE-KEV"]["software"] == ["Safari"]
    assert cves["CVE-KEV"]["cvss_score"] == 0.0  # no score: on KEV all the same
    assert len(cves["CVE-KEV"]["cve_link"]) == 300 and cves["CVE-CRIT"]["cve_link"] == "https://x/CVE-CRIT"
    [summary] = [event for event in events if event["change_type"] == TENANT_SUMMARY]
    assert summary["summary"]["new_cves"] == 4 and summary["severity"] == INFO


def test_vulnerabilities_and_users_read_for_the_first_time_are_no_news():
    """No earlier read of a source: nothing to compare with, so no CVE event and no counts (and no summary)."""
    store = MemoryObjectStore()
    first = snapshot(store, "20261123T090000Z", None)
    second = snapshot(store, "20261123T100000Z", first, vulnerability_detections=[detection("d1", "CVE-X", 10.0)],
                      users=[{"id": 1}], blueprints=[{"id": "bp"}])
    assert list(TenantChanges(store, first, second)) == []


def test_an_admin_action_alert_carries_the_audit_row_and_other_actions_are_counted_by_target_and_action():
    store = MemoryObjectStore()
    first = snapshot(store, "20261123T090000Z", None)
    removed = {"id": "01A", "action": "update", "occurred_at": "2026-11-23T09:30:00Z", "actor_id": "admin-1",
               "actor_type": "user", "target_id": "bp-1", "target_type": "blueprint",
               "new_state": json.dumps({"name": "Engineering",
                                        "library_items_removed": [{"id": "1", "name": "Firewall\n[high] x"}, "junk"]})}
    token = {"id": "01B", "action": "delete", "occurred_at": "2026-11-23T09:40:00Z", "target_type": "api_token",
             "new_state": json.dumps({"label": "SIEM"})}
    other_token = {**token, "id": "01F", "new_state": json.dumps({"label": "CI"})}
    many = {"id": "01G", "action": "update", "target_type": "blueprint",
            "new_state": json.dumps({"name": "All", "library_items_removed": [{"name": f"i{n}"} for n in range(60)]})}
    others = [{"id": "01C", "action": "frobnicate", "target_type": "widget"}, {"id": "01D"}, {"id": "01E"},
              {"id": "01H", "action": "update", "target_type": "blueprint", "new_state": "[1]"}]  # not an object
    second = snapshot(store, "20261123T100000Z", first, audit_events=[removed, token, *others, other_token, many])
    events = list(TenantChanges(store, first, second, severity=severity_table("api_token_deleted=info")))
    assert [(e["change_type"], e["severity"], e["device_name"]) for e in events] == [
        ("library_item_removed_from_blueprint", HIGH, "Engineering"), ("api_token_deleted", INFO, "SIEM"),
        ("api_token_deleted", INFO, "CI"), ("library_item_removed_from_blueprint", HIGH, "All"),
        (TENANT_SUMMARY, INFO, None)]
    assert len({event["event_id"] for event in events}) == len(events)  # one id per audit event
    assert len(events[3]["audit"]["library_items_removed"]) == 50
    assert events[0]["audit"] == {"id": "01A", "action": "update", "occurred_at": "2026-11-23T09:30:00Z",
                                  "actor_id": "admin-1", "actor_type": "user", "target_id": "bp-1",
                                  "target_type": "blueprint", "permissions": [],
                                  "library_items_removed": [events[0]["audit"]["library_items_removed"][0]]}
    assert "\n" not in events[0]["audit"]["library_items_removed"][0]
    summary = events[-1]["summary"]
    assert summary["audit_events"] == 8
    assert summary["audit_other_actions"] == {"?:?": 2, "blueprint:update": 1, "widget:frobnicate": 1}
    assert summary["sources"] == {"audit_events": "read"}


def test_the_first_snapshot_s_audit_trail_is_summarised_as_history():
    """The trail's first read (no base) is a backfill: counted in a summary, no alert, and no previous snapshot."""
    store = MemoryObjectStore()
    token = {"id": "01B", "action": "delete", "target_type": "api_token"}
    first = snapshot(store, "20261123T090000Z", None, audit_events=[token])
    first.document["tenant"]["audit"] = {}
    [summary] = TenantChanges(store, None, first)
    assert summary["previous_snapshot_id"] is None and summary["summary"]["audit_backfilled"] == 1


def test_users_and_blueprints_are_counted_against_their_last_read_and_a_quiet_run_sends_no_summary():
    store = MemoryObjectStore()
    first = snapshot(store, "20261123T090000Z", None, users=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                     blueprints=[{"id": "bp", "name": "Eng", "computers_count": 3}])
    unread = snapshot(store, "20261123T100000Z", first)
    assert list(TenantChanges(store, first, unread)) == []
    quiet = snapshot(store, "20261123T110000Z", unread, users=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                     blueprints=[{"id": "bp", "name": "Eng", "computers_count": 9}])  # the fleet moved: no change
    assert list(TenantChanges(store, unread, quiet)) == []
    moved = snapshot(store, "20261123T120000Z", quiet, users=[{"id": 1, "name": "A"}, {"id": 3, "name": "c"}],
                     blueprints=[{"id": "bp", "name": "Eng", "computers_count": 9}])
    [summary] = TenantChanges(store, quiet, moved)
    assert summary["summary"]["users"] == {"added": 1, "removed": 1, "changed": 1}
    assert summary["summary"]["blueprints"] == {"added": 0, "removed": 0, "changed": 0}
    blueprint_added = snapshot(store, "20261123T130000Z", moved,
                               users=[{"id": 1, "name": "A"}, {"id": 3, "name": "c"}],
                               blueprints=[{"id": "bp", "name": "Eng"}, {"id": "bp2", "name": "Ops"}])
    [summary] = TenantChanges(store, moved, blueprint_added)  # a blueprint alone is worth a summary
    assert summary["summary"]["blueprints"] == {"added": 1, "removed": 0, "changed": 0}
    assert summary["summary"]["users"] == {"added": 0, "removed": 0, "changed": 0}


def test_the_severity_setting_may_be_empty_or_have_empty_items():
    assert severity_table(None) == severity_table("") == severity_table(" , ") == DEFAULT_SEVERITY
    table = severity_table("api_token_changed=info,,threat_detected=info")
    assert table["api_token_changed"] == table["threat_detected"] == INFO
    with pytest.raises(ConfigurationError, match="'nonsense=high'"):
        severity_table("nonsense=high")
