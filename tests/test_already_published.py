"""A diff that takes the place of one no longer committed sends only what that one did not publish
(diff/already_published.py): on events in memory, and through the differ on an in-memory fleet."""

from __future__ import annotations

import logging
from typing import Any

from differ_fixtures import FakeFleet

from kandji_snapshots.diff.already_published import AlreadyPublished
from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.diff.progress import ChangesFile
from kandji_snapshots.diff.publisher import MemoryPublisher
from kandji_snapshots.snapshots.layout import manifest_key
from kandji_snapshots.snapshots.storage import MemoryObjectStore


def field_change(field: str, before: Any, after: Any, severity: str = "info") -> dict[str, Any]:
    return {"field": field, "before": before, "after": after, "severity": severity}


def device_changed(device_id: str, *changes: dict[str, Any], run: str = "B") -> dict[str, Any]:
    return {"event_id": f"{run}-{device_id}", "snapshot_id": run, "change_type": "device_changed",
            "device_id": device_id, "severity": max((c["severity"] for c in changes), key=["info", "high"].index),
            "changes": list(changes)}


def app_event(change_type: str, device_id: str, version: str, run: str = "B") -> dict[str, Any]:
    return {"event_id": f"{run}-{device_id}-{version}", "snapshot_id": run, "change_type": change_type,
            "device_id": device_id, "severity": "info",
            "app": {"bundle_id": "com.example.app", "app_name": "App", "path": "/Applications/App.app",
                    "version": version}}


def tenant_event(change_type: str, run: str = "B", severity: str = "high", **payload: Any) -> dict[str, Any]:
    return {"event_id": f"{run}-{change_type}", "snapshot_id": run, "previous_snapshot_id": "A",
            "change_type": change_type, "severity": severity, "device_id": "", "platform": "tenant", **payload}


FILEVAULT_OFF = field_change("posture.filevault.status", True, False, "high")
SIP_OFF = field_change("posture.startup_settings.sip", True, False, "high")
NAME = field_change("general.device_name", "old", "new")


def test_a_device_s_changes_already_published_are_dropped_and_what_is_new_goes_out_with_its_own_severity(caplog):
    """A change is the same when it is about the same device and field and ends the same (`after`)."""
    published = AlreadyPublished("B", [device_changed("d1", FILEVAULT_OFF, SIP_OFF)])
    found = [device_changed("d1", SIP_OFF, run="C"),  # all of it published: dropped
             device_changed("d1", FILEVAULT_OFF, NAME, run="C"),  # the name is news: info, alone
             device_changed("d2", FILEVAULT_OFF, run="C"),  # another device: news
             device_changed("d1", field_change("posture.filevault.status", False, None, "high"), run="C"),
             device_changed("d1", field_change("posture.application_firewall.status", True, False, "high"), run="C")]
    with caplog.at_level(logging.WARNING):
        sent = list(published.remove_from(found))
    assert [(event["device_id"], event["severity"], [c["field"] for c in event["changes"]]) for event in sent] == [
        ("d1", "info", ["general.device_name"]), ("d2", "high", ["posture.filevault.status"]),
        ("d1", "high", ["posture.filevault.status"]),  # ended differently: not the same change
        ("d1", "high", ["posture.application_firewall.status"])]  # the same end, another field
    [record] = [r for r in caplog.records if getattr(r, "replaces", None) == "B"]
    assert record.not_sent_again == 2  # one event cut, one dropped
    assert found[1]["changes"] == [FILEVAULT_OFF, NAME]  # the event found is left as it was


def test_an_app_change_is_the_same_when_its_device_app_and_version_are():
    published = AlreadyPublished("B", [app_event("app_updated", "d1", "2.0")])
    other_apps = [{**app_event("app_updated", "d1", "2.0", run="C"), "app": {**app_event("", "", "2.0")["app"],
                                                                              name: "other"}}
                  for name in ("bundle_id", "app_name", "path")]
    found = [app_event("app_updated", "d1", "2.0", run="C"), app_event("app_updated", "d1", "2.1", run="C"),
             app_event("app_updated", "d2", "2.0", run="C"), app_event("app_installed", "d1", "2.0", run="C"),
             *other_apps]
    sent = list(published.remove_from(found))
    assert [(e["change_type"], e["device_id"], e["app"]["version"]) for e in sent] == [
        ("app_updated", "d1", "2.1"), ("app_updated", "d2", "2.0"), ("app_installed", "d1", "2.0")] + [
        ("app_updated", "d1", "2.0")] * 3  # another bundle id, name or path: another app


def test_a_tenant_event_is_the_same_when_all_it_says_but_its_ids_and_severity_is_and_the_summary_always_goes(
        caplog):
    """(In whatever order its fields come: the published one was read back from the changes file.)"""
    threat = {"threat_name": "Pirrit", "device_id": "d1"}
    published = AlreadyPublished("B", [tenant_event("threat_detected", threat=threat),
                                       tenant_event("tenant_summary", summary={"new_cves": 1})])
    found = [tenant_event("threat_detected", run="C", severity="info", threat=dict(reversed(threat.items()))),
             tenant_event("threat_detected", run="C", threat={**threat, "device_id": "d2"}),
             tenant_event("tenant_summary", run="C", summary={"new_cves": 1})]
    with caplog.at_level(logging.WARNING):
        sent = list(published.remove_from(found))
    assert [(e["change_type"], e.get("threat", {}).get("device_id")) for e in sent] == [
        ("threat_detected", "d2"), ("tenant_summary", None)]
    [record] = [r for r in caplog.records if getattr(r, "replaces", None) == "B"]
    assert record.not_sent_again == 1


def test_a_replaced_diff_that_never_wrote_its_changes_file_published_nothing():
    store = MemoryObjectStore()
    found = [device_changed("d1", FILEVAULT_OFF, run="C")]
    assert list(AlreadyPublished.by(store, "20261123T100000Z").remove_from(found)) == found
    list(ChangesFile(store, "20261123T100000Z").write([device_changed("d1", FILEVAULT_OFF)]))
    assert list(AlreadyPublished.by(store, "20261123T100000Z").remove_from(found)) == []


def test_after_a_snapshot_s_manifest_is_deleted_the_next_diff_sends_only_what_it_did_not_publish():
    """B diffed against A and published; B's manifest is then deleted (a lost part's remedy), so C diffs
    against A and finds B's change again: only what is new since B goes out."""
    store, publisher, fleet = MemoryObjectStore(), MemoryPublisher(), FakeFleet.of(3)

    def run(hour: int) -> tuple[str, list[dict[str, Any]]]:
        before = len(publisher.events)
        manifest = fleet.collect(store, hour=hour)
        SnapshotDiffer(store, publisher).run(manifest.snapshot_id)
        return manifest.snapshot_id, [(e["device_id"], [c["field"] for c in e["changes"]])
                                      for e in publisher.events[before:] if e["change_type"] == "device_changed"]

    run(9)
    fleet.details["id-001"]["general"]["device_name"] = "Renamed"
    second, events = run(10)
    assert events == [("id-001", ["general.device_name"])]
    store.delete([manifest_key(second)])
    fleet.details["id-002"]["general"]["device_name"] = "Renamed too"
    _, events = run(11)
    assert events == [("id-002", ["general.device_name"])]
