"""Prism's per-device security categories, served like the real `/api/v1/prism/<category>`.

One row per device and category, with the columns integrations read from the real API
(device_id, device__name, serial_number, ..., the category's own columns, last_collected_at).
What a device's details already say (FileVault, activation lock) is derived from them; the
rest (firewall, Gatekeeper/XProtect, SIP and secure boot) is new per-device state, drawn
from the seed and changed by tests through `set`.

The server pages these rows as it pages /prism/apps (KandjiSimulator._prism_page: short pages,
null cursors; knobs `prism_page_rows` and `prism_cursors`). Each category needs its own
permission (`prism_<category>`); an unknown category answers 400 `{"detail": "Invalid
category: <name>"}`.
"""
from __future__ import annotations

import random
import threading
from datetime import datetime, timezone
from typing import Any

from .fleet import Fleet

# Category -> platforms that report it (Prism's own scope: firewall, Gatekeeper, startup are macOS).
CATEGORIES: dict[str, frozenset[str]] = {
    "device_information": frozenset({"Mac", "iPhone", "iPad", "AppleTV", "Windows", "Android"}),
    "filevault": frozenset({"Mac"}),
    "application_firewall": frozenset({"Mac"}),
    "gatekeeper_and_xprotect": frozenset({"Mac"}),
    "startup_settings": frozenset({"Mac"}),
    "activation_lock": frozenset({"Mac", "iPhone", "iPad"}),
}
# Other real categories, known to the API but not served here with rows: they answer an empty table.
OTHER_CATEGORIES = frozenset({"cellular", "certificates", "desktop_and_screensaver", "installed_profiles",
                              "kernel_extensions", "launch_agents_and_daemons", "local_users",
                              "system_extensions", "transparency_database"})


def permission_for(category: str) -> str:
    return f"prism_{category}"


PERMISSIONS = frozenset(permission_for(category) for category in (*CATEGORIES, *OTHER_CATEGORIES))


class InvalidCategory(Exception):
    """The category is not one Prism knows (the server answers 400)."""


def _prism_time(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat()  # 2024-07-23T14:11:37.150080+00:00, like Prism


# The spellings the device list uses for last_check_in (the fleet picks one per device).
_LIST_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%d %H:%M:%S.%f%z", "%Y-%m-%d %H:%M:%S%z",
                      "%Y-%m-%d %H:%M:%S %z", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    for fmt in _LIST_TIME_FORMATS:
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed
    return None


class PrismCategories:
    """The posture categories of one simulated tenant."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self._lock = threading.Lock()
        self._overrides: dict[tuple[str, str], dict[str, Any]] = {}  # (device_id, category) -> columns
        self._left_out: set[tuple[str, str]] = set()  # (device_id, category) served no row
        self._derived: dict[str, tuple[Any, dict[str, Any], dict[str, Any]]] = {}  # details-derived cache
        self._changes = 0  # bumped by `set`
        self._tables: dict[str, tuple[Any, list[dict[str, Any]]]] = {}  # category -> (version, rows)

    # -- test knobs
    def set(self, device_id: str, category: str, **columns: Any) -> None:
        """Change what `category` reports for a device, e.g. set(id, "application_firewall", status=False).

        The row's `last_collected_at` moves to the fleet's clock: the device reported it just now.
        """
        if category not in CATEGORIES:
            raise ValueError(f"unknown posture category {category!r}")
        self.fleet.list_item(device_id)  # KeyError for an unknown device
        with self._lock:
            override = self._overrides.setdefault((device_id, category), {})
            override.update(columns)
            override["last_collected_at"] = _prism_time(self.fleet.clock())
            self._changes += 1

    def leave_out(self, device_id: str, category: str, left_out: bool = True) -> None:
        """Serve no row of `category` for a device (Prism has none for it) until called with left_out=False."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown posture category {category!r}")
        with self._lock:
            (self._left_out.add if left_out else self._left_out.discard)((device_id, category))
            self._changes += 1

    # -- rows
    def rows(self, category: str) -> list[dict[str, Any]]:
        """Every row of a category, in Prism's (enrolment) order."""
        if category in OTHER_CATEGORIES:
            return []
        if category not in CATEGORIES:
            raise InvalidCategory(category)
        # A table is rebuilt only when the fleet or a posture override changed (pages re-read it).
        fleet_version = getattr(self.fleet, "_version", None)
        version = None if fleet_version is None else (fleet_version, self._changes)
        cached = self._tables.get(category)
        if version is not None and cached is not None and cached[0] == version:
            return cached[1]
        platforms = CATEGORIES[category]
        rows = [self._row(category, item) for item in self.fleet.list_items(ordering=None)
                if item.get("platform") in platforms and (item["device_id"], category) not in self._left_out]
        self._tables = {category: (version, rows)}  # one table at a time: clients read them one by one
        return rows

    def _row(self, category: str, item: dict[str, Any]) -> dict[str, Any]:
        device_id = item["device_id"]
        user = item.get("user") if isinstance(item.get("user"), dict) else {}
        row: dict[str, Any] = {
            "device_id": device_id,
            "device__name": item.get("device_name"),
            "device__family": item.get("platform"),
            "device__user_id": str(user["id"]) if user.get("id") is not None else None,
            "device__user_name": user.get("name"),
            "device__user_email": user.get("email"),
            "blueprint_id": item.get("blueprint_id"),
            "blueprint_name": item.get("blueprint_name"),
            "serial_number": item.get("serial_number"),
            "model_id": None,
            "asset_tag": item.get("asset_tag") or None,
            "tags": None,
        }
        row.update(getattr(self, f"_{category}")(item))
        checked_in = _parse_time(item.get("last_check_in"))
        row["last_collected_at"] = _prism_time(checked_in) if checked_in else None
        with self._lock:
            row.update(self._overrides.get((device_id, category), {}))
        return row

    def _rng(self, device_id: str) -> random.Random:
        return random.Random(f"{self.fleet.seed}:{device_id}:posture")

    def _from_details(self, device_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(filevault, activation_lock) sections of the device's details, cached while they cannot change."""
        try:
            key = getattr(self.fleet._get(device_id), "filevault", None)  # the fleet's FileVault override
        except (AttributeError, KeyError):
            key = object()  # unknown internals: never trust the cache
        cached = self._derived.get(device_id)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        details = self.fleet.details(device_id)
        sections = (details.get("filevault") or {}, details.get("activation_lock") or {})
        self._derived[device_id] = (key, *sections)
        return sections

    # -- one method per category: its own columns, from the device's state
    def _device_information(self, item: dict[str, Any]) -> dict[str, Any]:
        rng = self._rng(item["device_id"])
        mac = item.get("platform") == "Mac"
        return {
            "model_name": item.get("model"),
            "os_version": item.get("os_version"),
            "display_os_version": item.get("os_version"),
            "os_build": item.get("supplemental_build_version") or None,
            "apple_silicon": (rng.random() < 0.8) if mac else None,
            "device_capacity": round(rng.choice((245.11, 494.38, 994.66, 127.9)), 2),
            "host_name": f"{str(item.get('serial_number', '')).lower()}.local" if mac else None,
            "mdm_enabled": item.get("mdm_enabled"),
            "agent_installed": item.get("agent_installed"),
        }

    def _filevault(self, item: dict[str, Any]) -> dict[str, Any]:
        filevault, _ = self._from_details(item["device_id"])
        enabled = filevault.get("filevault_enabled")
        return {
            "status": enabled if isinstance(enabled, bool) else None,
            "key_type": "Personal Recovery Key" if enabled else None,
            "key_escrowed": filevault.get("filevault_prk_escrowed") if enabled else False,
            "regeneration_needed": bool(filevault.get("filevault_regen_required")),
            "scheduled_key_rotation": None,
        }

    def _application_firewall(self, item: dict[str, Any]) -> dict[str, Any]:
        rng = self._rng(item["device_id"])
        rng.random()
        enabled = rng.random() < 0.9
        return {
            "status": enabled,
            "block_all_incoming": enabled and rng.random() < 0.05,
            "stealth_mode": enabled and rng.random() < 0.6,
            "allow_signed_applications": True,
            "logging": enabled,
            "logging_option": "throttled",
            "version": "1.6",
            "unloading": False,
        }

    def _gatekeeper_and_xprotect(self, item: dict[str, Any]) -> dict[str, Any]:
        rng = self._rng(item["device_id"])
        for _ in range(2):
            rng.random()
        return {
            "gatekeeper_status": rng.random() < 0.97,
            "trusted_developers": True,
            "gatekeeper_version": "8.0",
            "gatekeeper_opaque_version": str(rng.choice((91, 94, 96))),
            "xprotect_version": str(rng.choice((5272, 5283, 5290))),
            "malware_removal_tool_version": "1.93",
        }

    def _startup_settings(self, item: dict[str, Any]) -> dict[str, Any]:
        rng = self._rng(item["device_id"])
        for _ in range(3):
            rng.random()
        sip = rng.random() < 0.98
        return {
            "sip": sip,
            "ssv": sip,
            "secure_boot_level": "full" if rng.random() < 0.95 else "medium",
            "external_boot_level": "disallowed" if rng.random() < 0.7 else "allowed",
            "bootstrap_token_auth": rng.random() < 0.5,
            "bootstrap_token_escrowed": rng.random() < 0.9,
            "kext_requires_bst": False,
            "software_update_requires_bst": False,
        }

    def _activation_lock(self, item: dict[str, Any]) -> dict[str, Any]:
        _, lock = self._from_details(item["device_id"])
        return {name: lock.get(name) for name in (
            "activation_lock_supported", "activation_lock_allowed_while_supervised",
            "device_activation_lock_enabled", "user_activation_lock_enabled", "bypass_code_failed")}
