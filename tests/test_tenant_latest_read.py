"""The saved queries over tenant snapshot tables answer from the latest committed snapshot that READ the source.

A read that found nothing (every threat resolved, no CVE left) is the latest read: the answer is empty, never
the older read's rows. A run whose token may not read the source leaves the last read standing, empty or not
(unknown is not false). Snapshots are built by the collector on in-memory fakes into a folder, and the queries
run there with DuckDB, as Athena's text translated (query/local_duckdb.py).
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kandji_fakes import FakeKandjiApi, StepClock, device

from kandji_snapshots.collect.collector import SnapshotCollector
from kandji_snapshots.collect.tenant_sources import TenantReader
from kandji_snapshots.errors import KandjiAuthError
from kandji_snapshots.query import local_duckdb
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.layout import committed_key
from kandji_snapshots.snapshots.storage import LocalObjectStore

SOURCES = ("threats", "vulnerability_detections", "vulnerabilities")
DEVICES = ("d1", "d2")


class FakeTenantApi:
    """The tenant lists by endpoint; an endpoint in `forbidden` answers 403 as for a token without it."""

    host = FakeKandjiApi.host

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {"threats": [], "detections": [], "vulnerabilities": []}
        self.forbidden: set[str] = set()

    def read_list(self, endpoint: str, path: str, paginator: Any):
        if endpoint in self.forbidden:
            raise KandjiAuthError("403", status=403, endpoint=endpoint)
        return iter(self.rows[endpoint])

    def audit_events(self, start_date: str):
        raise AssertionError("the audit trail is not read here")


def threat(device_id: str, name: str, status: str) -> dict[str, Any]:
    return {"device_id": device_id, "device_name": f"Mac {device_id}", "threat_name": name, "status": status,
            "file_hash": f"hash-{name}", "detection_date": "2026-11-23T08:00:00Z"}


def critical_cve(device_id: str, cve_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A detection of a CVSS 9.8 CVE on a device, and the CVE's own row."""
    return ({"device_id": device_id, "device_name": f"Mac {device_id}", "cve_id": cve_id, "cvss_score": 9.8,
             "name": "Chrome", "version": "1.0"},
            {"cve_id": cve_id, "cvss_score": 9.8, "kev_score": 0})


class Tenant:
    """One collector run after another, on the same fakes, each an hour after the last and ending before now
    (the queries read the last three UTC days)."""

    def __init__(self, root: Path) -> None:
        self.store = LocalObjectStore(root)
        self.root = root
        self.api = FakeTenantApi()
        self.next_start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=12)

    def collect(self) -> Manifest:
        clock = StepClock(self.next_start)
        self.next_start += timedelta(hours=1)
        reader = TenantReader(self.api, self.store, clock=clock, sources=SOURCES)
        return SnapshotCollector(FakeKandjiApi([device(device_id) for device_id in DEVICES]), self.store,
                                 clock=clock, tenant=reader).collect()

    def answers(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(threat, device) not quarantined, and (CVE, device) critical."""
        con = local_duckdb.connect(self.root)
        threats = local_duckdb.run_query(con, "threats_not_quarantined")
        cves = local_duckdb.run_query(con, "devices_with_critical_cve")
        return (sorted((row["threat_name"], row["device_id"]) for row in threats),
                sorted((row["cve_id"], row["device_id"]) for row in cves))

    def committed_row(self, manifest: Manifest) -> dict[str, Any]:
        (line,) = gzip.decompress(self.store.get(committed_key(manifest.snapshot_id))).splitlines()
        return json.loads(line)


def test_a_read_that_finds_nothing_empties_the_answer_and_a_forbidden_read_changes_nothing(tmp_path: Path):
    tenant = Tenant(tmp_path)
    api = tenant.api
    detection, vulnerability = critical_cve("d1", "CVE-2024-9999")
    api.rows = {"threats": [threat("d1", "Pirrit", "RELEASED"), threat("d2", "Adload", "QUARANTINED")],
                "detections": [detection], "vulnerabilities": [vulnerability]}
    tenant.collect()
    assert tenant.answers() == ([("Pirrit", "d1")], [("CVE-2024-9999", "d1")])

    # Every threat resolved, the CVE patched: read, and empty. The answer is empty, not the last rows.
    api.rows = {"threats": [], "detections": [], "vulnerabilities": []}
    emptied = tenant.collect()
    assert emptied.document["tenant"]["tables"]["threats"]["rows"] == 0
    assert len(emptied.tenant_table_keys("threats")) == 1, "an empty read is a read: one empty part"
    assert tenant.committed_row(emptied)["tenant_sources_read"] == sorted(SOURCES)
    assert tenant.answers() == ([], [])

    # A token that may no longer read them: unknown, so the last read (empty) stands.
    api.forbidden = {"threats", "detections", "vulnerabilities"}
    refused = tenant.collect()
    assert {name: read["status"] for name, read in refused.document["tenant"]["sources"].items()} == \
        dict.fromkeys(SOURCES, "forbidden")
    assert tenant.committed_row(refused)["tenant_sources_read"] == []
    assert tenant.answers() == ([], [])

    # Read again, with rows; then refused again: those rows stand.
    api.forbidden = set()
    detection, vulnerability = critical_cve("d2", "CVE-2024-5555")
    api.rows = {"threats": [threat("d2", "Adload", "ALLOWED")], "detections": [detection],
                "vulnerabilities": [vulnerability]}
    tenant.collect()
    assert tenant.answers() == ([("Adload", "d2")], [("CVE-2024-5555", "d2")])
    api.forbidden = {"threats", "detections"}
    api.rows = {"threats": [], "detections": [], "vulnerabilities": []}  # never served: the token may not ask
    tenant.collect()
    assert tenant.answers() == ([("Adload", "d2")], [("CVE-2024-5555", "d2")])


def test_rows_written_before_the_column_keep_the_rule_of_their_time(tmp_path: Path):
    """A committed_snapshots row without tenant_sources_read (an older version wrote it) read a source when its
    snapshot has rows in the table: the answer is those rows, not empty, until a snapshot of this version
    reads the source."""
    tenant = Tenant(tmp_path)
    api = tenant.api
    api.rows["threats"] = [threat("d1", "Pirrit", "RELEASED")]
    old = tenant.collect()
    old_row = {name: value for name, value in tenant.committed_row(old).items() if name != "tenant_sources_read"}
    tenant.store.put(committed_key(old.snapshot_id), gzip.compress(json.dumps(old_row).encode() + b"\n"))
    assert tenant.answers()[0] == [("Pirrit", "d1")]

    api.forbidden = {"threats"}
    tenant.collect()
    assert tenant.answers()[0] == [("Pirrit", "d1")], "not read since: the old row's read stands"

    api.forbidden = set()
    api.rows["threats"] = []
    tenant.collect()
    assert tenant.answers()[0] == []
