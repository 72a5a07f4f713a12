"""Tenant sources on in-memory fakes: the paginators on canned pages, the audit trail's state and claims
(overlapping runs, a run that claimed and died), the alert rules, what a blueprint row keeps, the simulator's
quirks and the digest's tenant counts."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from kandji_snapshots.collect.audit import STALE_CLAIM, AuditSettings
from kandji_snapshots.collect.tenant_sources import (
    READ,
    SUPERSEDED,
    TenantReader,
    _without_enrollment_code,
    sources_setting,
)
from kandji_snapshots.diff.digest import build_digest
from kandji_snapshots.diff.rules import HIGH, INFO
from kandji_snapshots.diff.tenant_changes import classify_audit, severity_table
from kandji_snapshots.errors import ConfigurationError, KandjiApiError
from kandji_snapshots.kandji.paging import NextUrlPaginator, PageNumberPaginator
from kandji_snapshots.snapshots.catalog import Manifest, write_manifest
from kandji_snapshots.snapshots.layout import manifest_key
from kandji_snapshots.snapshots.storage import MemoryObjectStore
from kandji_snapshots.snapshots.table_io import iter_rows
from simulator import Fleet, KandjiSimulator

HOST = "acme.api.kandji.io"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


# --- paginators ----------------------------------------------------------------------------------

def read_all(paginator, serve) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, asked = [], []
    while (params := paginator.next_request()) is not None:
        asked.append(params)
        assert len(asked) < 100
        rows.extend(paginator.update(serve(params)))
    return rows, asked


def test_next_url_pages_follow_only_the_query_of_next_on_the_api_host():
    pages = {"": {"results": [{"id": 1}], "next": f"https://{HOST}/api/v1/users?cursor=b"},
             "b": {"results": [{"id": 2}], "next": f"https://{HOST}/api/v1/users/?cursor=c"},
             "c": {"results": [{"id": 3}], "next": None}}
    rows, asked = read_all(NextUrlPaginator("users", "users", HOST), lambda params: pages[params.get("cursor", "")])
    assert [row["id"] for row in rows] == [1, 2, 3]
    assert asked == [{}, {"cursor": "b"}, {"cursor": "c"}]
    assert NextUrlPaginator.requests_for(3, 1) == len(asked)


@pytest.mark.parametrize("elsewhere", ["https://evil.example/api/v1/users?cursor=b",
                                       f"https://{HOST}.evil.example/api/v1/users?cursor=b",
                                       f"https://{HOST}/api/v1/devices?cursor=b"])
def test_a_next_link_elsewhere_is_refused(elsewhere):
    paginator = NextUrlPaginator("users", "users", HOST)
    paginator.next_request()
    with pytest.raises(KandjiApiError, match="elsewhere"):
        paginator.update({"results": [], "next": elsewhere})


def test_a_read_short_of_its_count_or_a_next_served_twice_fails():
    short = NextUrlPaginator("threats", "threat-details", HOST)
    with pytest.raises(KandjiApiError, match="ended after 1 of the 3"):
        short.update({"count": 3, "results": [{"a": 1}], "next": None})
    looping = NextUrlPaginator("users", "users", HOST)
    link = f"https://{HOST}/api/v1/users?cursor=x"
    looping.update({"results": [], "next": link})
    with pytest.raises(KandjiApiError, match="looping"):
        looping.update({"results": [], "next": link})


def test_numbered_pages_end_on_a_short_page_and_take_total_twice():
    rows = [{"cve_id": f"CVE-{n}"} for n in range(5)]

    def serve(params):
        start = (params["page"] - 1) * params["size"]
        text = (f'{{"total": {len(rows)}, "size": 2, "total": {len(rows)}, '
                f'"results": {json.dumps(rows[start:start + params["size"]])}}}')
        return json.loads(text)  # JSON with "total" twice parses; the paginator reads only `results`

    read, asked = read_all(PageNumberPaginator("vulnerabilities", "vulnerability-management/vulnerabilities", 2), serve)
    assert read == rows and len(asked) == PageNumberPaginator.requests_for(5, 2) == 3


# --- the audit trail's state and claims -------------------------------------------------------------

class FakeAuditApi:
    host = HOST

    def __init__(self, events: list[dict[str, Any]]):
        self.events = events
        self.start_dates: list[str] = []

    def audit_events(self, start_date: str):
        self.start_dates.append(start_date)
        return iter(sorted(self.events, key=lambda event: event["occurred_at"]))

    def read_list(self, endpoint, path, paginator):
        raise AssertionError("only the audit trail is read here")


def event(n: int, at: datetime) -> dict[str, Any]:
    return {"id": f"01EVENT{n:04d}", "action": "update", "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "target_type": "blueprint", "new_state": {}}


def commit(store, reader: TenantReader, snapshot_id: str, previous: Manifest | None) -> tuple[Manifest, Any]:
    """One run of the tenant part, committed by a (minimal) manifest as the collector does."""
    run = reader.read(snapshot_id, previous)
    reader.commit(run, snapshot_id)
    manifest = Manifest({"schema_version": 1, "snapshot_id": snapshot_id, "tables": {},
                         "previous_snapshot_id": previous.snapshot_id if previous else None,
                         "tenant": run.section()})
    write_manifest(store, manifest)
    return manifest, run


def stored_ids(store, *manifests: Manifest) -> list[str]:
    keys = [key for manifest in manifests
            for key in manifest.document["tenant"]["tables"].get("audit_events", {}).get("keys", [])]
    return [row["id"] for row in iter_rows(store, keys)]


def reader(store, api, clock) -> TenantReader:
    return TenantReader(api, store, clock=clock, sources=("audit_events",),
                        audit=AuditSettings(backfill_days=2, overlap_hours=6))


def test_two_runs_from_the_same_state_store_each_event_once():
    store = MemoryObjectStore()
    api = FakeAuditApi([event(n, NOW - timedelta(hours=n)) for n in range(1, 4)])
    clock = lambda: NOW  # noqa: E731
    first, _ = commit(store, reader(store, api, clock), "20261123T100000Z", None)
    api.events.append(event(9, NOW - timedelta(minutes=5)))
    # Two runs start from the first's state; the first to commit wins, the other drops its events.
    a, b = reader(store, api, clock), reader(store, api, clock)
    run_a, run_b = a.read("20261123T110000Z", first), b.read("20261123T110001Z", first)
    a.commit(run_a, "20261123T110000Z")
    second = Manifest({"schema_version": 1, "snapshot_id": "20261123T110000Z", "tables": {}, "tenant": run_a.section()})
    write_manifest(store, second)
    b.commit(run_b, "20261123T110001Z")
    third = Manifest({"schema_version": 1, "snapshot_id": "20261123T110001Z", "tables": {}, "tenant": run_b.section()})
    write_manifest(store, third)
    assert run_b.sources["audit_events"].status == SUPERSEDED
    # The next run, after the loser, continues from the winner's state (found through its claim).
    api.events.append(event(10, NOW))
    fourth, run = commit(store, reader(store, api, clock), "20261123T120000Z", third)
    assert run.sources["audit_events"].status == READ
    ids = stored_ids(store, first, second, third, fourth)
    assert sorted(ids) == sorted({e["id"] for e in api.events}) and len(ids) == len(set(ids))


def test_a_claim_whose_run_never_committed_blocks_only_until_it_is_stale():
    store = MemoryObjectStore()
    api = FakeAuditApi([event(1, NOW - timedelta(hours=1))])
    now = [NOW]
    clock = lambda: now[0]  # noqa: E731
    first, _ = commit(store, reader(store, api, clock), "20261123T100000Z", None)
    dead = reader(store, api, clock)
    dead.commit(dead.read("20261123T103000Z", first), "20261123T103000Z")  # claimed, then the run died
    api.events.append(event(2, NOW))
    _, busy = commit(store, reader(store, api, clock), "20261123T104000Z", first)
    assert busy.sources["audit_events"].status == "busy"  # it may still be committing: leave the trail alone
    now[0] = NOW + STALE_CLAIM + timedelta(minutes=1)
    later, run = commit(store, reader(store, api, clock), "20261123T120000Z", first)
    assert run.sources["audit_events"].status == READ
    assert stored_ids(store, first, later) == ["01EVENT0001", "01EVENT0002"]


def test_a_continuation_whose_manifest_is_unreadable_stops_the_trail_not_the_run():
    """The trail's next run cut short (or written by a newer version): where the trail ends is unknown, so
    the audit source fails with what to do (re-reading from before it would store its events twice)."""
    store = MemoryObjectStore()
    api = FakeAuditApi([event(1, NOW - timedelta(hours=1))])
    clock = lambda: NOW  # noqa: E731
    first, _ = commit(store, reader(store, api, clock), "20261123T100000Z", None)
    api.events.append(event(2, NOW - timedelta(minutes=5)))
    second, _ = commit(store, reader(store, api, clock), "20261123T110000Z", first)
    key = manifest_key(second.snapshot_id)
    store.put(key, store.get(key)[:40])
    api.events.append(event(3, NOW))
    third, run = commit(store, reader(store, api, clock), "20261123T120000Z", first)
    read = run.sources["audit_events"]
    assert read.status == "failed" and "20261123T110000Z" in read.error and "noncurrent versions" in read.error
    assert stored_ids(store, third) == []
    assert third.document["tenant"]["audit"]["state"] == first.document["tenant"]["audit"]["state"]


def test_late_events_within_the_overlap_are_stored_older_ones_are_counted_not_stored():
    store = MemoryObjectStore()
    api = FakeAuditApi([event(1, NOW - timedelta(hours=1))])
    now = [NOW]
    first, _ = commit(store, reader(store, api, lambda: now[0]), "20261123T100000Z", None)
    now[0] = NOW + timedelta(hours=1)
    api.events += [event(2, NOW - timedelta(hours=3)),  # late, within the 6 hours of overlap
                   event(3, NOW - timedelta(hours=9))]  # later than any window: counted, not stored
    second, run = commit(store, reader(store, api, lambda: now[0]), "20261123T110000Z", first)
    assert stored_ids(store, first, second) == ["01EVENT0001", "01EVENT0002"]
    assert second.document["tenant"]["audit"]["too_late"] == 1
    assert api.start_dates[-1] == "2026-11-23"  # the watermark less the overlap, as a whole day


# --- rules and rows --------------------------------------------------------------------------------

@pytest.mark.parametrize(("target", "action", "state", "expected"), [
    ("api_token", "create", {}, "api_token_created"),
    ("api_token", "update", {"permissions": []}, "api_token_changed"),
    ("api_token", "update", {"label": "renamed"}, None),
    ("api_token", "delete", {}, "api_token_deleted"),
    ("library_item", "update", {"active": False}, "library_item_deactivated"),
    ("library_item", "update", {"active": True}, None),
    ("library_item", "delete", {}, "library_item_deleted"),
    ("blueprint", "update", {"library_items_removed": [{"id": "1", "name": "FileVault"}]},
     "library_item_removed_from_blueprint"),
    ("blueprint", "update", {"library_items_removed": []}, None),
    ("blueprint", "delete", {}, "blueprint_deleted"),
    ("widget", "frobnicate", {}, None),
])
def test_which_audit_actions_are_alerts(target, action, state, expected):
    assert classify_audit({"target_type": target, "action": action, "new_state": json.dumps(state)}) == expected


def test_severities_are_the_deployer_s_to_change():
    table = severity_table("api_token_changed=info, threat_detected = high")
    assert table["api_token_changed"] == INFO and table["threat_released"] == HIGH
    with pytest.raises(ConfigurationError):
        severity_table("api_token_changed=urgent")
    with pytest.raises(ConfigurationError):
        severity_table("nonsense=high")


def test_a_blueprint_row_keeps_whether_its_enrollment_code_is_on_never_the_code():
    row = _without_enrollment_code({"id": "b", "enrollment_code": {"code": "123456", "is_active": True}})
    assert row["enrollment_code"] == {"is_active": True} and "123456" not in json.dumps(row)


def test_the_tenant_sources_setting():
    assert "audit_events" in sources_setting("all") and sources_setting("none") == ()
    assert sources_setting("users, blueprints") == ("users", "blueprints")
    with pytest.raises(ConfigurationError):
        sources_setting("users,secrets")


# --- the simulator's quirks and the digest ----------------------------------------------------------

def test_the_simulator_serves_the_recorded_envelopes():
    fleet = Fleet.generate(3, seed=2)
    with KandjiSimulator(fleet, token="t") as sim:
        for n in range(3):
            sim.tenant.add_audit_event("update", "blueprint")
        sim.tenant.audit_page_rows = 2
        get = lambda path, **params: requests.get(sim.api_url + path, params=params,  # noqa: E731
                                                  headers={"Authorization": "Bearer t"}, timeout=5)
        first = get("audit/events", limit=500, sort_by="occurred_at").json()
        assert len(first["results"]) == 2 and first["next"].startswith(sim.base_url + "/api/v1/audit/events?")
        vulnerabilities = get("vulnerability-management/vulnerabilities").text
        assert vulnerabilities.count('"total"') == 2
        blueprints = get("blueprints").json()
        assert blueprints["count"] == len(blueprints["results"])
        assert "code" in blueprints["results"][0]["enrollment_code"]
    refused = KandjiSimulator(fleet, token="t", permissions={"devices"})
    with refused:
        refusal = requests.get(refused.api_url + "users", headers={"Authorization": "Bearer t"}, timeout=5)
        assert refusal.status_code == 403


def test_the_digest_counts_the_tenant_events():
    store = MemoryObjectStore()
    events = [{"event_id": "1", "change_type": "api_token_changed", "severity": HIGH, "platform": "tenant",
               "snapshot_id": "20261123T130000Z", "device_id": "", "device_name": "SIEM"},
              {"event_id": "2", "change_type": "tenant_summary", "severity": INFO, "platform": "tenant",
               "snapshot_id": "20261123T130000Z", "device_id": ""}]
    body = gzip.compress(b"".join(json.dumps(e).encode() + b"\n" for e in events))
    store.put("changes/dt=2026-11-23/20261123T130000Z.json.gz", body)
    document = build_digest(store, "2026-11-23").document()
    assert document["tenant_counts"]["api_token_changed"] == 1 and document["platform_counts"] == {"tenant": 2}
    assert document["high_severity_events"][0]["change_type"] == "api_token_changed"


def test_the_trail_s_first_read_is_summarised_and_later_admin_actions_are_alerts():
    from kandji_snapshots.diff.tenant_changes import TenantChanges

    store = MemoryObjectStore()
    token_change = {**event(1, NOW - timedelta(hours=1)), "target_type": "api_token",
                    "new_state": {"label": "SIEM", "permissions": [{"path": "/api/v1/users", "http_method": "GET"}]}}
    api = FakeAuditApi([token_change])
    older = Manifest({"schema_version": 1, "snapshot_id": "20261123T090000Z", "tables": {}})  # before tenant sources
    write_manifest(store, older)
    first, _ = commit(store, reader(store, api, lambda: NOW), "20261123T100000Z", older)
    backfill = list(TenantChanges(store, older, first))
    assert [(e["change_type"], e["summary"].get("audit_backfilled")) for e in backfill] == [("tenant_summary", 1)]
    api.events.append({**token_change, "id": "01EVENT0002", "occurred_at": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")})
    second, _ = commit(store, reader(store, api, lambda: NOW), "20261123T110000Z", first)
    alerts = [e for e in TenantChanges(store, first, second) if e["change_type"] != "tenant_summary"]
    assert [(e["change_type"], e["severity"], e["audit"]["id"]) for e in alerts] == [
        ("api_token_changed", HIGH, "01EVENT0002")]
    assert alerts[0]["audit"]["permissions"] == ["GET /api/v1/users"] and alerts[0]["platform"] == "tenant"
