"""Tenant alerts end to end (collector and differ handlers, simulator, moto, SNS -> SQS): one high alert per
alert-worthy admin action, threat and critical CVE in the run that first sees it, published once; a token
without the tenant permissions still gets complete device snapshots."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import boto3
import pytest
from aws_helpers import BUCKET, all_keys, manifests, read_rows
from conftest import load_handler
from handler_pipeline import collect_and_diff, start, the_manifest

from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.query import local_duckdb
from kandji_snapshots.snapshots.layout import manifest_key
from simulator import Fleet


def tenant_events(messages: list[dict]) -> list[dict]:
    return [message for message in messages if message.get("platform") == "tenant"]


def bucket_as_folder(folder) -> None:
    """The bucket's tables, gzip as written, in a folder DuckDB reads like Athena reads the bucket."""
    import boto3

    for key in all_keys(prefix="snapshots/"):
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_each_alert_worthy_tenant_change_is_published_once(deployment, lambda_context, monkeypatch,
                                                           tmp_path):
    fleet = Fleet.generate(12, seed=5)
    sim = start(fleet, monkeypatch)
    tenant = sim.tenant
    devices = fleet.device_ids()
    try:
        quarantined = tenant.add_threat(devices[0], "Pirrit")
        tenant.add_cve("CVE-2024-0001", devices[:2], cvss_score=5.0)  # known before: never new
        tenant.add_audit_event("update", "blueprint", new_state={"name": "Old news"})
        collect_and_diff(lambda_context)
        assert tenant_events(deployment("all")) == []  # the first snapshot is history, not news

        tenant.add_audit_event("update", "api_token", new_state={
            "label": "SIEM",
            "permissions": [{"path": "/api/v1/devices/{device_id}/secrets/bypasscode", "http_method": "GET"}]})
        tenant.add_audit_event("update", "library_item",
                               new_state={"active": False, "name": "FileVault", "type": "profile"})
        tenant.add_audit_event("update", "blueprint", target_component="library_items", new_state={
            "name": "Engineering", "library_items_removed": [{"id": "1", "name": "Firewall\n[high] fake"}],
            "library_items_added": []})
        tenant.add_audit_event("frobnicate", "widget")  # no rule knows it: summarised
        tenant.release_threat(quarantined["file_hash"])
        tenant.add_threat(devices[3], "Adload")
        tenant.add_cve("CVE-2024-9999", devices[2:9], cvss_score=9.8)
        tenant.add_cve("CVE-2024-5555", devices[2:4], cvss_score=6.1, kev_score=1)  # on KEV
        tenant.add_cve("CVE-2024-4444", devices[2:4], cvss_score=6.1)  # neither: summary only
        trigger = collect_and_diff(lambda_context)
        events = tenant_events(deployment("all"))
        high = tenant_events(deployment("high"))
        load_handler("differ").lambda_handler(trigger, lambda_context)  # delivered again: nothing new
        assert tenant_events(deployment("all")) == []

        collect_and_diff(lambda_context)  # nothing new on the tenant
        assert tenant_events(deployment("all")) == []
    finally:
        sim.stop()

    kinds = Counter((event["change_type"], event["severity"]) for event in events)
    assert kinds == Counter({("api_token_changed", "high"): 1, ("library_item_deactivated", "high"): 1,
                             ("library_item_removed_from_blueprint", "high"): 1, ("threat_released", "high"): 1,
                             ("threat_detected", "high"): 1, ("critical_cve_detected", "high"): 2,
                             ("tenant_summary", "info"): 1})
    assert len(high) == len(events) - 1
    cves = {event["cve"]["cve_id"]: event["cve"] for event in events if event["change_type"] == "critical_cve_detected"}
    assert set(cves) == {"CVE-2024-9999", "CVE-2024-5555"}
    assert cves["CVE-2024-9999"]["device_count"] == 7 and len(cves["CVE-2024-9999"]["devices"]) == 7
    assert cves["CVE-2024-5555"]["kev"] is True
    [summary] = [event for event in events if event["change_type"] == "tenant_summary"]
    assert summary["summary"]["audit_other_actions"] == {"widget:frobnicate": 1}
    [removed] = [event for event in events if event["change_type"] == "library_item_removed_from_blueprint"]
    assert removed["audit"]["library_items_removed"] == ["Firewall [high] fake"]  # one line, data only

    # The saved queries over the same tables (the snapshots were taken today: within every query's days).
    bucket_as_folder(tmp_path)
    con = local_duckdb.connect(tmp_path)
    tokens = local_duckdb.run_query(con, "api_token_changes")
    assert [(row["action"], row["token_label"]) for row in tokens] == [("update", "SIEM")]
    assert "secrets/bypasscode" in tokens[0]["permissions"]
    [removal] = local_duckdb.run_query(con, "library_items_removed_from_blueprints")
    assert removal["blueprint_name"] == "Engineering" and "Firewall" in removal["library_items_removed"]
    critical = local_duckdb.run_query(con, "devices_with_critical_cve")
    assert Counter(row["cve_id"] for row in critical) == {"CVE-2024-9999": 7, "CVE-2024-5555": 2}
    assert all(row["on_kev"] == (row["cve_id"] == "CVE-2024-5555") for row in critical)
    [released] = local_duckdb.run_query(con, "threats_not_quarantined")
    assert (released["threat_name"], released["status"]) == ("Pirrit", "RELEASED")

    # Parts of a run that never committed (no manifest, so no committed_snapshots row) are never read: a
    # newer snapshot's threats would otherwise be the latest read, its audit events listed twice.
    for table in ("audit_events", "threats"):
        for part in local_duckdb.table_files(tmp_path, table):
            rows = [json.loads(line) for line in gzip.decompress(part.read_bytes()).splitlines()]
            ghosts = [{**row, "snapshot_id": "29991231T000000Z", "status": "ALLOWED",
                       **({"id": f"ghost-{row['id']}"} if "id" in row else {})} for row in rows]
            part.with_name("29991231T000000Z-" + part.name).write_bytes(
                gzip.compress("".join(json.dumps(row) + "\n" for row in ghosts).encode()))
    con = local_duckdb.connect(tmp_path)
    assert [row["event_id"] for row in local_duckdb.run_query(con, "api_token_changes")] == \
        [row["event_id"] for row in tokens]
    assert [row["status"] for row in local_duckdb.run_query(con, "threats_not_quarantined")] == ["RELEASED"]


def test_a_token_without_tenant_permissions_still_gets_complete_device_snapshots(deployment, lambda_context,
                                                                                  monkeypatch):
    fleet = Fleet.generate(10, seed=8)
    sim = start(fleet, monkeypatch, permissions={"devices", "details", "apps"})
    try:
        collect_and_diff(lambda_context)
    finally:
        sim.stop()
    [manifest] = manifests()
    assert sorted(row["device_id"] for row in read_rows(manifest["tables"]["devices"]["keys"])) == \
        sorted(fleet.device_ids())
    assert manifest["device_count"] == 10 and manifest["tables"]["device_details"]["rows"] == 10
    sources = manifest["tenant"]["sources"]
    assert {name: read["status"] for name, read in sources.items()} == {
        name: "forbidden" for name in ("audit_events", "threats", "vulnerability_detections", "vulnerabilities",
                                       "users", "blueprints")}
    assert "GET /audit/events (Audit log)" in manifest["tenant"]["missing_permissions"]
    assert manifest["tenant"]["tables"] == {}


def test_following_the_advice_for_a_lost_part_sends_no_tenant_alert_twice(pipeline):
    """B published a new threat and a critical CVE; then a part of B is lost, so C is diffed against A as
    the errors advise. The threat and CVE B announced are not announced again; what is new in C is."""
    fleet = Fleet.generate(3, seed=11)
    run = pipeline(fleet)
    devices = fleet.device_ids()
    a = run.collect()["snapshot_id"]
    run.diff(a)
    run.sim.tenant.add_threat(devices[0], "Pirrit")
    run.sim.tenant.add_cve("CVE-2024-9999", devices[:2], cvss_score=9.8)
    b = run.collect()
    run.diff(b["snapshot_id"])
    announced_by_b = [(event["change_type"], event["snapshot_id"]) for event in tenant_events(run.received())]
    assert sorted(announced_by_b) == [("critical_cve_detected", b["snapshot_id"]),
                                      ("tenant_summary", b["snapshot_id"]), ("threat_detected", b["snapshot_id"])]
    boto3.client("s3").delete_object(Bucket=BUCKET, Key=the_manifest(b)["tables"]["device_apps"]["keys"][0])

    run.sim.tenant.add_threat(devices[1], "Adload")
    fleet.install_app(devices[2], "Zoom", "us.zoom.xos", "6.0.0")  # C reads the apps B lost, so finds the loss
    c = run.collect()["snapshot_id"]
    with pytest.raises(KandjiSnapshotsError, match=f"delete .*{manifest_key(b['snapshot_id'])}"):
        run.diff(c)
    boto3.client("s3").delete_object(Bucket=BUCKET, Key=manifest_key(b["snapshot_id"]))  # as the error says
    assert run.diff(c)["previous_snapshot_id"] == a

    announced_by_c = tenant_events(run.published_once())[len(announced_by_b):]
    assert [(event["change_type"], (event.get("threat") or {}).get("threat_name")) for event in announced_by_c] == \
        [("threat_detected", "Adload"), ("tenant_summary", None)]  # C's summary: what C read, always sent
