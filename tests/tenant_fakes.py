"""Tenant snapshots built by the collector on in-memory fakes into a local folder: the tenant lists by
endpoint (each may answer 403), one run after another an hour apart, and the saved queries run there with
DuckDB (Athena's text translated, query/local_duckdb.py)."""

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


def detection(device_id: str, cve_id: str, score: float | None) -> dict[str, Any]:
    """A vulnerability detection row: a CVE of `score` in Safari on a device."""
    return {"device_id": device_id, "device_name": f"Mac {device_id}", "cve_id": cve_id, "cvss_score": score,
            "name": "Safari", "path": "/Applications/Safari.app", "version": "17.0", "cve_link": f"https://x/{cve_id}"}


def critical_cve(device_id: str, cve_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A detection of a CVSS 9.8 CVE on a device, and the CVE's own row."""
    return detection(device_id, cve_id, 9.8), {"cve_id": cve_id, "cvss_score": 9.8, "kev_score": 0}


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
