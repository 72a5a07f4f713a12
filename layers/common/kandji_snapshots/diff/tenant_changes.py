"""Events about the tenant, not one device: admin actions from the audit trail, threats, new CVEs, and a
summary of everything else. They go out with the device events of the same snapshot (same topic, format
and filter attributes: `change_type`, `severity`, `platform` = `tenant`), appended after them.

* Audit events: each is in exactly one committed snapshot's `audit_events` rows (collect/audit.py), so
  publishing the rows of the snapshot being diffed publishes each event once. Alert-worthy actions get an
  event of their own (`TENANT_CHANGE_TYPES`); every other action, the ones no rule knows included, is
  counted in the run's `tenant_summary` event by target type and action (and stays in the table).
* Threats, vulnerabilities: compared with the latest earlier snapshot that read the source (a source not
  read is unknown, never "gone": what it hid is reported when it is read again). A new threat, or one
  released from quarantine, is an event; a CVE newly detected with CVSS >= 9 or on CISA's KEV list is ONE
  event with the devices it reached (the first `MAX_DEVICES_LISTED`, and their count).
* Users, blueprints: counted (added, removed, changed) in the summary.

Severities are a table a deployer can change: `TENANT_SEVERITY_OVERRIDES` (`change_type=severity,...`).
Names in these events come from admins and devices (attacker-controlled): they are carried as data, made
inert and cut (`inert_text.one_line`, `NAME_MAX_CHARS`) and rendered by the usual bounded message helpers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from kandji_snapshots.diff.events import SCHEMA_VERSION, event_id
from kandji_snapshots.diff.rules import HIGH, INFO, SEVERITIES
from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.inert_text import one_line
from kandji_snapshots.snapshots.catalog import Manifest, load_manifest, manifest_exists
from kandji_snapshots.snapshots.storage import ObjectStore
from kandji_snapshots.snapshots.table_io import iter_rows
from kandji_snapshots.snapshots.tenant_schema import ROW_IDENTITY

TENANT_PLATFORM = "tenant"  # the `platform` filter attribute of tenant events
SEVERITY_OVERRIDES_ENV = "TENANT_SEVERITY_OVERRIDES"
NAME_MAX_CHARS = 120
MAX_DEVICES_LISTED = 50
MAX_SNAPSHOTS_BACK = 200  # how far back the last read of a source is looked for
CRITICAL_CVSS = 9.0
# Columns that move with the fleet, not with the user or blueprint: never "changed".
_VOLATILE = frozenset({"snapshot_id", "computers_count", "device_count", "updated_at"})

API_TOKEN_CREATED = "api_token_created"
API_TOKEN_CHANGED = "api_token_changed"
API_TOKEN_DELETED = "api_token_deleted"
LIBRARY_ITEM_DEACTIVATED = "library_item_deactivated"
LIBRARY_ITEM_DELETED = "library_item_deleted"
LIBRARY_ITEM_REMOVED_FROM_BLUEPRINT = "library_item_removed_from_blueprint"
BLUEPRINT_DELETED = "blueprint_deleted"
THREAT_DETECTED = "threat_detected"
THREAT_RELEASED = "threat_released"
CRITICAL_CVE_DETECTED = "critical_cve_detected"
TENANT_SUMMARY = "tenant_summary"

TENANT_CHANGE_TYPES = (API_TOKEN_CREATED, API_TOKEN_CHANGED, API_TOKEN_DELETED, LIBRARY_ITEM_DEACTIVATED,
                       LIBRARY_ITEM_DELETED, LIBRARY_ITEM_REMOVED_FROM_BLUEPRINT, BLUEPRINT_DELETED, THREAT_DETECTED,
                       THREAT_RELEASED, CRITICAL_CVE_DETECTED, TENANT_SUMMARY)
DEFAULT_SEVERITY = {change_type: HIGH for change_type in TENANT_CHANGE_TYPES} | {TENANT_SUMMARY: INFO}


def severity_table(raw: str | None) -> dict[str, str]:
    """DEFAULT_SEVERITY with a deployer's overrides (`api_token_changed=info,threat_detected=high`)."""
    table = dict(DEFAULT_SEVERITY)
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        change_type, _, severity = item.partition("=")
        change_type, severity = change_type.strip(), severity.strip().lower()
        if change_type not in table or severity not in SEVERITIES:
            raise ConfigurationError(f"{SEVERITY_OVERRIDES_ENV}: {item.strip()!r} is not <change type>=<severity> "
                                     f"with a change type among {', '.join(TENANT_CHANGE_TYPES)} and a severity among "
                                     f"{', '.join(SEVERITIES)}.")
        table[change_type] = severity
    return table


def bounded(value: Any, limit: int = NAME_MAX_CHARS) -> str | None:
    """A name as data: inert and cut (inert_text.one_line); None when there is none."""
    if value is None or value == "":
        return None
    return one_line(value, limit)


def classify_audit(row: dict[str, Any]) -> str | None:
    """The alert an audit row is (a TENANT_CHANGE_TYPES value), or None for every other action."""
    target, action = row.get("target_type") or "", row.get("action") or ""
    state = _state(row)
    if target == "api_token":
        return {"create": API_TOKEN_CREATED, "delete": API_TOKEN_DELETED}.get(
            action, API_TOKEN_CHANGED if action == "update" and "permissions" in state else None)
    if target == "library_item":
        if action == "delete":
            return LIBRARY_ITEM_DELETED
        if action == "update" and state.get("active") is False:
            return LIBRARY_ITEM_DEACTIVATED
    if target == "blueprint":
        if action == "delete":
            return BLUEPRINT_DELETED
        if state.get("library_items_removed"):
            return LIBRARY_ITEM_REMOVED_FROM_BLUEPRINT
    return None


def _state(row: dict[str, Any]) -> dict[str, Any]:
    try:
        state = json.loads(row.get("new_state") or "{}")
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


class TenantChanges:
    """The tenant events of one snapshot, against the snapshots before it."""

    def __init__(self, store: ObjectStore, previous: Manifest | None, current: Manifest,
                 severity: dict[str, str] | None = None):
        self._store = store
        self._previous = previous
        self._current = current
        self._severity = severity or dict(DEFAULT_SEVERITY)
        self._summary: dict[str, Any] = {}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if "tenant" not in self._current.document:
            return
        yield from self._audit()
        yield from self._threats()
        yield from self._cves()
        self._count_changes("users", ("id",))
        self._count_changes("blueprints", ("id",))
        if any(self._summary.get(name) for name in ("audit_events", "audit_backfilled", "new_cves")) or any(
                any((self._summary.get(table) or {}).values()) for table in ("users", "blueprints")):
            self._summary["sources"] = {name: read.get("status") for name, read in
                                        (self._current.document["tenant"].get("sources") or {}).items()}
            yield self._event(TENANT_SUMMARY, "summary", summary=self._summary)  # only when something happened

    # -- building blocks -------------------------------------------------------------------------------

    def _event(self, change_type: str, key: str, **payload: Any) -> dict[str, Any]:
        previous_id = self._previous.snapshot_id if self._previous else None
        return {"schema_version": SCHEMA_VERSION,
                "event_id": event_id(previous_id, self._current.snapshot_id, change_type, "", (key,)),
                "change_type": change_type, "severity": self._severity.get(change_type, INFO),
                "snapshot_id": self._current.snapshot_id, "previous_snapshot_id": previous_id,
                "device_id": "", "device_name": payload.pop("subject_name", None), "serial_number": None,
                "platform": TENANT_PLATFORM, **payload}

    def _rows(self, manifest: Manifest, table: str) -> list[dict[str, Any]] | None:
        keys = manifest.tenant_table_keys(table)
        return None if keys is None else list(iter_rows(self._store, keys))

    def _last_reader(self, *tables: str) -> Manifest | None:
        """The latest earlier snapshot that read every one of `tables`; None when none did (unknown)."""
        manifest = self._previous
        for _ in range(MAX_SNAPSHOTS_BACK):
            if manifest is None:
                return None
            if all(manifest.tenant_table_keys(table) is not None for table in tables):
                return manifest
            before = manifest.document.get("previous_snapshot_id")
            manifest = load_manifest(self._store, before) if before and manifest_exists(self._store, before) else None
        return None

    def _last_read(self, table: str) -> list[dict[str, Any]] | None:
        """The rows of `table` in the latest earlier snapshot that read it; None when none did (unknown)."""
        reader = self._last_reader(table)
        return None if reader is None else self._rows(reader, table)

    # -- the sources ------------------------------------------------------------------------------------

    def _audit(self) -> Iterator[dict[str, Any]]:
        rows = self._rows(self._current, "audit_events") or []
        audit = (self._current.document["tenant"].get("audit") or {})
        if rows and audit.get("base") is None:  # the trail's first read: its backfill is history, not news
            self._summary["audit_backfilled"] = len(rows)
            return
        others: Counter[str] = Counter()
        for row in rows:
            change_type = classify_audit(row)
            if change_type is None:
                others[f"{row.get('target_type') or '?'}:{row.get('action') or '?'}"] += 1
                continue
            state = _state(row)
            yield self._event(change_type, str(row.get("id")),
                              subject_name=bounded(state.get("name") or state.get("label")),
                              audit={"id": row.get("id"), "action": row.get("action"),
                                     "occurred_at": row.get("occurred_at"), "actor_id": row.get("actor_id"),
                                     "actor_type": row.get("actor_type"), "target_id": row.get("target_id"),
                                     "target_type": row.get("target_type"),
                                     "permissions": [bounded(f"{p.get('http_method')} {p.get('path')}")
                                                     for p in state.get("permissions") or []
                                                     if isinstance(p, dict)][:50],
                                     "library_items_removed": [bounded(item.get("name")) for item in
                                                               state.get("library_items_removed") or []
                                                               if isinstance(item, dict)][:50]})
        self._summary["audit_events"] = len(rows)
        self._summary["audit_other_actions"] = dict(sorted(others.items()))

    def _threats(self) -> Iterator[dict[str, Any]]:
        current = self._rows(self._current, "threats")
        before = self._last_read("threats") if current is not None else None
        if current is None or before is None:  # unknown on either side: nothing to compare
            return
        key = ROW_IDENTITY["threats"]
        known = {tuple(row.get(name) for name in key): row for row in before}
        for row in current:
            identity = tuple(row.get(name) for name in key)
            earlier = known.get(identity)
            change_type = (THREAT_DETECTED if earlier is None
                           else THREAT_RELEASED
                           if row.get("status") == "RELEASED" and earlier.get("status") != "RELEASED"
                           else None)
            if change_type is None:
                continue
            yield self._event(change_type, "\x1f".join(str(part) for part in identity),
                              subject_name=bounded(row.get("device_name")),
                              threat={name: bounded(row.get(name)) for name in (
                                  "threat_name", "classification", "status", "device_id", "device_serial_number",
                                  "file_path", "file_hash", "released_by", "release_note", "detection_date",
                                  "date_of_release")})

    def _cves(self) -> Iterator[dict[str, Any]]:
        """A CVE is critical by its CVSS score (the detections say it) or by CISA's KEV list (the
        vulnerabilities table says it). Each is new against the last read that could tell: by score, the last
        detections read; by KEV, the last run that read both (before any did, the last detections read: a KEV
        list read for the first time alerts on new detections, not on history). A run that could not read the
        KEV list alerts on scores only (KEV unknown: None), and a KEV CVE it could not judge is alerted by the
        next run that reads both."""
        current = self._rows(self._current, "vulnerability_detections")
        reader = self._last_reader("vulnerability_detections") if current is not None else None
        if current is None or reader is None:
            return
        before = self._rows(reader, "vulnerability_detections") or []
        by_cve: dict[str, list[dict[str, Any]]] = {}
        for row in current:
            by_cve.setdefault(str(row.get("cve_id")), []).append(row)
        seen = {str(row.get("cve_id")) for row in before}
        self._summary["new_cves"] = len(by_cve.keys() - seen)
        kev_rows = self._rows(self._current, "vulnerabilities")
        seen_by_kev = seen
        if kev_rows is not None:
            kev_reader = self._last_reader("vulnerability_detections", "vulnerabilities")
            if kev_reader is not None and kev_reader.snapshot_id != reader.snapshot_id:  # else: the same rows
                seen_by_kev = {str(row.get("cve_id")) for row in self._rows(kev_reader, "vulnerability_detections")
                               or []}
        kev = {str(row.get("cve_id")): row for row in kev_rows or []}
        for cve_id, rows in sorted(by_cve.items()):
            score = max((row.get("cvss_score") or 0.0) for row in rows)
            on_kev = (kev.get(cve_id) or {}).get("kev_score") or 0
            new_by_score = cve_id not in seen and score >= CRITICAL_CVSS
            new_by_kev = cve_id not in seen_by_kev and on_kev and score < CRITICAL_CVSS
            if not (new_by_score or new_by_kev):
                continue
            devices = sorted({(row.get("device_id"), bounded(row.get("device_name"))) for row in rows},
                             key=lambda item: str(item[0]))
            yield self._event(CRITICAL_CVE_DETECTED, cve_id, subject_name=bounded(cve_id),
                              cve={"cve_id": bounded(cve_id), "cvss_score": score,
                                   "kev": bool(on_kev) if kev_rows is not None else None,  # None: not read
                                   "software": sorted({bounded(row.get("name")) or "" for row in rows})[:20],
                                   "cve_link": bounded(rows[0].get("cve_link"), 300),
                                   "device_count": len(devices),
                                   "devices": [{"device_id": device_id, "device_name": name}
                                               for device_id, name in devices[:MAX_DEVICES_LISTED]]})

    def _count_changes(self, table: str, key: tuple[str, ...]) -> None:
        current = self._rows(self._current, table)
        before = self._last_read(table) if current is not None else None
        if current is None or before is None:
            return
        def index(rows):
            return {tuple(row.get(name) for name in key): {k: v for k, v in row.items() if k not in _VOLATILE}
                    for row in rows}
        now, then = index(current), index(before)
        self._summary[table] = {"added": len(now.keys() - then.keys()), "removed": len(then.keys() - now.keys()),
                                "changed": sum(1 for k in now.keys() & then.keys() if now[k] != then[k])}
