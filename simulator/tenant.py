"""The tenant-wide sources behind the simulator: audit trail, threats, vulnerabilities, users, blueprints.

Shapes and paging as recorded (docs: ../shared/kandji-api.md, "Tenant-wide sources"):
  /audit/events                         {"results", "previous", "next"}: `next` a full URL whose opaque
                                        cursor is a position (occurred_at, id), so an event added late with an
                                        earlier occurred_at lands behind a reader; `limit` up to 500,
                                        `sort_by` occurred_at | -occurred_at, `start_date`, `end_date`
  /threat-details                       {"count", "next", "previous", "malware_count", "pup_count", "results"},
                                        `limit`/`offset`, `next` a full URL
  /vulnerability-management/detections  {"next", "previous", "results"}, cursor `after`, `size` up to 300
  /vulnerability-management/vulnerabilities  `page`/`size` (up to 50), an envelope with "total" TWICE
  /users                                {"next", "previous", "results"}, `next` a full URL with a cursor
  /blueprints                           {"count", "next", "previous", "results"}, `limit`/`offset`

Timestamps take the several spellings the real API mixes. Tests add data between and during runs:
`add_audit_event(...)` (any occurred_at, so late events too) and `before_page(endpoint, n, change)`, which
runs `change` just before the n-th page of that endpoint (counted from the call) is answered.
"""
from __future__ import annotations

import base64
import binascii
import json
import random
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from .fleet import REFERENCE_NOW, TIMESTAMP_FORMATS, Fleet
from .params import BadRequest, int_param

AUDIT_MAX_LIMIT = 500
AUDIT_DEFAULT_LIMIT = 100
DETECTIONS_MAX_SIZE = 300
VULNERABILITIES_MAX_SIZE = 50
USERS_PAGE = 100
OFFSET_MAX_LIMIT = 300

# Each source's path below /api/v1/, by its name (the token's permission and the stats' endpoint name): the
# server routes by it and the `next` links point back at it.
PATHS = {
    "audit_events": "audit/events",
    "threats": "threat-details",
    "detections": "vulnerability-management/detections",
    "vulnerabilities": "vulnerability-management/vulnerabilities",
    "users": "users",
    "blueprints": "blueprints",
}

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(at: datetime, rng: random.Random) -> str:
    """A ULID (48-bit milliseconds, 80 random bits, Crockford base32), like audit event ids."""
    value = (int(at.timestamp() * 1000) << 80) | rng.getrandbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def parse_time(text: str) -> datetime:
    """Any of the spellings the simulator serves (and `start_date` as a client sends it)."""
    text = text.strip().replace(" +0000", "+00:00").replace("Z", "+00:00")
    if len(text) == 10:
        text += "T00:00:00+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _encode(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def _decode(cursor: str) -> dict[str, Any]:
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(position, dict):
            raise ValueError
        return position
    except (ValueError, binascii.Error):
        raise BadRequest({"detail": "Invalid cursor."}) from None


def _int(params: dict[str, str], name: str, default: int, maximum: int, minimum: int = 1) -> int:
    return min(int_param(params, name, default, minimum), maximum)


class Tenant:
    """The tenant's own data, generated from the fleet's seed; thread-safe; served objects are never mutated."""

    def __init__(self, fleet: Fleet, seed: int | None = None):
        self._lock = threading.RLock()
        self._rng = random.Random(f"{fleet.seed if seed is None else seed}:tenant")
        self.clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
        self._fleet = fleet
        self._events: list[tuple[datetime, str, dict[str, Any]]] = []
        self.threats: list[dict[str, Any]] = []
        self.detections: list[dict[str, Any]] = []
        self.vulnerabilities: list[dict[str, Any]] = []
        self.blueprints: list[dict[str, Any]] = [self._blueprint(name, blueprint_id)
                                                 for name, blueprint_id in fleet._blueprints.items()]
        self.users: list[dict[str, Any]] = self._users_of(fleet)
        self._page_changes: list[list[Any]] = []  # [endpoint, pages left, change]
        self.audit_page_rows = AUDIT_MAX_LIMIT  # audit events a page holds at most, whatever the limit

    # ------------------------------------------------------------------ data
    def _fmt(self, at: datetime, index: int | None = None) -> str:
        index = self._rng.randrange(len(TIMESTAMP_FORMATS)) if index is None else index
        return at.astimezone(timezone.utc).strftime(TIMESTAMP_FORMATS[index])

    def _blueprint(self, name: str, blueprint_id: str) -> dict[str, Any]:
        return {"id": blueprint_id, "name": name, "icon": "ss-books", "color": "aqua-800", "description": "",
                "params": {}, "computers_count": 0, "type": "classic",
                "enrollment_code": {"code": f"{self._rng.randrange(10**6):06d}", "is_active": True}}

    def _fleet_items(self) -> list[dict[str, Any]]:
        """The fleet's list items as they stand, read without `Fleet._ordered` (which tests hook to time the
        device list's pages: a tenant request must not count as one)."""
        with self._fleet._lock:
            return [device.item for device in self._fleet._devices.values()]

    def _users_of(self, fleet: Fleet) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for item in self._fleet_items():
            user = item.get("user")
            if isinstance(user, dict) and user.get("email") and user["email"] not in seen:
                seen[user["email"]] = {
                    "id": str(user.get("id")) if "-" in str(user.get("id"))
                    else str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                    "email": user["email"], "name": user.get("name"), "active": True,
                    "archived": bool(user.get("is_archived")),
                    "created_at": self._fmt(REFERENCE_NOW - timedelta(days=400)),
                    "updated_at": self._fmt(REFERENCE_NOW - timedelta(days=3)),
                    "department": None, "job_title": None,
                    "deprecated_user_id": str(self._rng.randrange(10000, 99999)), "device_count": 0,
                    "integration": {"id": 1, "name": "Microsoft", "uuid": "1b6e3f0c-0000-4000-8000-000000000001",
                                    "type": "office365"}}
            if isinstance(user, dict) and user.get("email"):
                seen[user["email"]]["device_count"] += 1
        return list(seen.values())

    def add_audit_event(self, action: str = "update", target_type: str = "blueprint", *,
                        occurred_at: datetime | None = None, target_id: str | None = None,
                        target_component: str = "", new_state: dict[str, Any] | None = None,
                        actor_type: str = "user") -> dict[str, Any]:
        """Add one event (occurred_at defaults to the clock: earlier ones are late events). Returns it as served."""
        with self._lock:
            at = occurred_at or self.clock()
            event = {"id": ulid(at, self._rng), "action": action, "occurred_at": self._fmt(at),
                     "actor_id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                     "actor_type": actor_type,
                     "target_id": target_id or str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                     "target_type": target_type, "target_component": target_component,
                     "new_state": new_state or {}, "metadata": {"source_id": None, "source": None}}
            self._events.append((at, event["id"], event))
            return event

    def audit_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [event for _, _, event in sorted(self._events)]

    def add_threat(self, device_id: str, threat_name: str, *, status: str = "QUARANTINED",
                   classification: str = "MALWARE", detected_at: datetime | None = None) -> dict[str, Any]:
        with self._lock:
            item = self._fleet.list_item(device_id)
            at = detected_at or self.clock()
            threat = {"threat_name": threat_name, "classification": classification, "status": status,
                      "process_name": "launchd", "process_owner": "root", "device_name": item.get("device_name"),
                      "device_id": device_id, "device_serial_number": item.get("serial_number"),
                      "detection_date": at.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                      "date_of_quarantine": at.strftime("%Y-%m-%dT%H:%M:%S.%f") if status == "QUARANTINED" else None,
                      "date_of_release": None, "released_by": None, "release_note": "",
                      "file_path": f"/Users/Shared/{threat_name}.pkg",
                      "file_hash": f"{self._rng.getrandbits(256):064x}", "bundle_path": "",
                      "blueprint_id": item.get("blueprint_id"), "blueprint_name": item.get("blueprint_name"),
                      "library_item_name": "Avert", "library_item_id": "6b7f0e5e-0000-4000-8000-00000000a7e7",
                      "pup_posture": "protect", "malware_posture": "protect"}
            self.threats = [*self.threats, threat]
            return threat

    def release_threat(self, file_hash: str, released_by: str = "admin@example.com", note: str = "") -> None:
        with self._lock:
            self.threats = [{**threat, "status": "RELEASED", "released_by": released_by, "release_note": note,
                             "date_of_release": self.clock().strftime("%Y-%m-%dT%H:%M:%S.%f")}
                            if threat["file_hash"] == file_hash else threat for threat in self.threats]

    def add_cve(self, cve_id: str, device_ids: list[str], *, cvss_score: float = 9.8, kev_score: int = 0,
                software: str = "Google Chrome", version: str = "120.0.1") -> None:
        """One CVE detected on `device_ids` (one detection row each) and listed among the vulnerabilities."""
        severity = ("Critical" if cvss_score >= 9 else "High" if cvss_score >= 7
                    else "Medium" if cvss_score >= 4 else "Low")
        with self._lock:
            now = self.clock()
            rows = []
            for device_id in device_ids:
                item = self._fleet.list_item(device_id)
                rows.append({"device_id": device_id, "device_name": item.get("device_name"),
                             "device_serial_number": item.get("serial_number"), "device_model": item.get("model"),
                             "device_os_version": item.get("os_version"), "blueprint_id": item.get("blueprint_id"),
                             "blueprint_name": item.get("blueprint_name"), "name": software, "version": version,
                             "path": f"/Applications/{software}.app", "bundle_id": "com.example.app",
                             "cve_id": cve_id, "cve_description": f"A flaw in {software}.",
                             "cve_link": f"https://nvd.nist.gov/vuln/detail/{cve_id}", "cvss_score": cvss_score,
                             "cvss_severity": severity,
                             "first_detection_date": now.strftime("%Y-%m-%d %H:%M:%S.%f"),
                             "latest_detection_date": now.strftime("%Y-%m-%d %H:%M:%S.%f")})
            self.detections = [*self.detections, *rows]
            self.vulnerabilities = [*self.vulnerabilities, {
                "cve_id": cve_id, "severity": severity, "cvss_score": cvss_score, "kev_score": kev_score,
                "cve_link": f"https://nvd.nist.gov/vuln/detail/{cve_id}",
                "first_detection_date": self._fmt(now, 0), "latest_detection_date": self._fmt(now, 0),
                "device_count": len(device_ids), "software": [software], "status": "Active"}]

    def before_page(self, endpoint: str, page: int, change: Callable[[], Any]) -> None:
        """Run `change` once, just before the `page`-th request (from now) to `endpoint` is answered."""
        if page < 1:
            raise ValueError("page must be >= 1")
        with self._lock:
            self._page_changes.append([endpoint, page, change])

    def _due(self, endpoint: str) -> None:
        due = []
        with self._lock:
            for entry in list(self._page_changes):
                if entry[0] == endpoint:
                    entry[1] -= 1
                    if entry[1] == 0:
                        self._page_changes.remove(entry)
                        due.append(entry[2])
        for change in due:
            change()

    # ------------------------------------------------------------------ pages
    def page(self, endpoint: str, params: dict[str, str], base_url: str) -> tuple[int, bytes]:
        """(status 200, JSON body) of one page; raises BadRequest."""
        self._due(endpoint)
        serve = getattr(self, f"_page_{endpoint}")
        return 200, serve(params, base_url)

    @staticmethod
    def _next(base_url: str, endpoint: str, params: dict[str, Any]) -> str:
        return f"{base_url}/api/v1/{PATHS[endpoint]}?{urlencode(params)}"

    def _page_audit_events(self, params: dict[str, str], base_url: str) -> bytes:
        limit = min(_int(params, "limit", AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT), self.audit_page_rows)
        sort_by = params.get("sort_by") or "-occurred_at"
        if sort_by not in ("occurred_at", "-occurred_at"):
            raise BadRequest({"sort_by": [f'"{sort_by}" is not a valid choice.']})
        descending = sort_by.startswith("-")
        try:
            start = parse_time(params["start_date"]) if params.get("start_date") else None
            end = parse_time(params["end_date"]) if params.get("end_date") else None
        except ValueError:
            raise BadRequest({"detail": "Invalid date."}) from None
        with self._lock:
            events = sorted(self._events, reverse=descending)
        events = [entry for entry in events
                  if (start is None or entry[0] >= start) and (end is None or entry[0] <= end)]
        if params.get("cursor"):
            position = _decode(params["cursor"])
            try:
                key = (parse_time(position["t"]), position["id"])
            except (KeyError, ValueError, TypeError):
                raise BadRequest({"detail": "Invalid cursor."}) from None
            events = [entry for entry in events
                      if ((entry[0], entry[1]) < key if descending else (entry[0], entry[1]) > key)]
        page = events[:limit]
        following = None
        if len(events) > limit:
            last = page[-1]
            query = {key: value for key, value in params.items() if key != "cursor"}
            query.update({"limit": limit, "sort_by": sort_by,
                          "cursor": _encode({"t": last[0].isoformat(), "id": last[1]})})
            following = self._next(base_url, "audit_events", query)
        return json.dumps({"results": [entry[2] for entry in page], "previous": None, "next": following}).encode()

    def _offset_page(self, rows: list[dict[str, Any]], params: dict[str, str], base_url: str, endpoint: str,
                     ) -> tuple[list[dict[str, Any]], str | None]:
        limit = _int(params, "limit", OFFSET_MAX_LIMIT, OFFSET_MAX_LIMIT)
        offset = _int(params, "offset", 0, 10**9, minimum=0)
        page = rows[offset:offset + limit]
        following = (self._next(base_url, endpoint, {"limit": limit, "offset": offset + limit})
                     if offset + limit < len(rows) else None)
        return page, following

    def _page_threats(self, params: dict[str, str], base_url: str) -> bytes:
        with self._lock:
            threats = list(self.threats)
        page, following = self._offset_page(threats, params, base_url, "threats")
        return json.dumps({"count": len(threats), "next": following, "previous": None,
                           "malware_count": sum(t["classification"] == "MALWARE" for t in threats),
                           "pup_count": sum(t["classification"] == "PUP" for t in threats),
                           "results": page}).encode()

    def _page_blueprints(self, params: dict[str, str], base_url: str) -> bytes:
        counts: dict[str, int] = {}
        for item in self._fleet_items():
            counts[str(item.get("blueprint_id"))] = counts.get(str(item.get("blueprint_id")), 0) + 1
        with self._lock:
            blueprints = [{**blueprint, "computers_count": counts.get(blueprint["id"], 0)}
                          for blueprint in self.blueprints]
        page, following = self._offset_page(blueprints, params, base_url, "blueprints")
        return json.dumps({"count": len(blueprints), "next": following, "previous": None, "results": page}).encode()

    def _cursor_page(self, rows: list[dict[str, Any]], start: int, size: int, base_url: str, endpoint: str,
                     cursor_name: str, extra: dict[str, Any]) -> bytes:
        page = rows[start:start + size]
        following = (self._next(base_url, endpoint, {**extra, cursor_name: _encode({"position": start + size})})
                     if start + size < len(rows) else None)
        return json.dumps({"next": following, "previous": None, "results": page}).encode()

    @staticmethod
    def _position(params: dict[str, str], name: str) -> int:
        if not params.get(name):
            return 0
        position = _decode(params[name]).get("position")
        if not isinstance(position, int) or position < 0:
            raise BadRequest({"detail": "Invalid cursor."})
        return position

    def _page_detections(self, params: dict[str, str], base_url: str) -> bytes:
        size = _int(params, "size", DETECTIONS_MAX_SIZE, DETECTIONS_MAX_SIZE)
        with self._lock:
            rows = list(self.detections)
        return self._cursor_page(rows, self._position(params, "after"), size, base_url, "detections", "after",
                                 {"size": size})

    def _page_users(self, params: dict[str, str], base_url: str) -> bytes:
        with self._lock:
            rows = list(self.users)
        return self._cursor_page(rows, self._position(params, "cursor"), USERS_PAGE, base_url, "users", "cursor", {})

    def _page_vulnerabilities(self, params: dict[str, str], base_url: str) -> bytes:
        size = _int(params, "size", VULNERABILITIES_MAX_SIZE, VULNERABILITIES_MAX_SIZE)
        page_number = _int(params, "page", 1, 10**6)
        with self._lock:
            rows = list(self.vulnerabilities)
        page = rows[(page_number - 1) * size:page_number * size]
        # The recorded example's envelope holds "total" twice: a JSON object no dict can produce.
        return (f'{{"total": {len(rows)}, "size": {size}, "total": {len(rows)}, '
                f'"results": {json.dumps(page)}}}').encode()
