"""What subscribers must receive after `Fleet.apply_demo_changes()`: exactly its six changes, once each, with
their severities and what changed (test_pipeline_end_to_end.py through SNS, test_fleet_rules.py in memory)."""

from __future__ import annotations

from simulator import Fleet


def assert_exactly_the_demo_changes(events: list[dict], made: dict, fleet: Fleet) -> None:
    """`events`: one run's published events (summary included); `made`: what apply_demo_changes returned."""
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
