"""The change events' format: what subscribers receive and what the changes file holds.

Every event is one JSON object:

    schema_version, event_id, change_type, severity, snapshot_id, previous_snapshot_id,
    device_id, device_name, serial_number, platform, user (the device's assigned user: {email, name},
    null when it has none, absent when unknown),
    then `changes` (device_changed), `app` (app_*) or `apps` (device_added/removed, device_apps_first_read;
    null when the apps were never read).

`event_id` is a hash of what the event is about, so diffing the same two snapshots
again gives the same ids: subscribers can drop duplicates by id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from kandji_snapshots.diff.rules import CHANGE_TYPE_SEVERITY, INFO, SEVERITIES, SEVERITY_RULES, highest

_SECURITY_FIELDS = frozenset(field for rule in SEVERITY_RULES for field in rule.fields)

SCHEMA_VERSION = 1

DEVICE_ADDED = "device_added"
DEVICE_REMOVED = "device_removed"
DEVICE_CHANGED = "device_changed"
# A device whose apps were unknown (listed, never read: `apps: null`) has them read for the first
# time: its `apps`, once, like device_added's. Not app_installed: they may have been there all along.
DEVICE_APPS_FIRST_READ = "device_apps_first_read"
APP_INSTALLED = "app_installed"
APP_UPDATED = "app_updated"
APP_REMOVED = "app_removed"
SNAPSHOT_SUMMARY = "snapshot_summary"

# Events of one device come in this order (then by app identity): deterministic output.
CHANGE_TYPES = (DEVICE_ADDED, DEVICE_REMOVED, DEVICE_CHANGED, DEVICE_APPS_FIRST_READ, APP_INSTALLED, APP_UPDATED,
                APP_REMOVED)
CHANGE_TYPE_RANK = {change_type: rank for rank, change_type in enumerate(CHANGE_TYPES)}

# What an `apps` list item (device_added/removed) keeps of each app row.
APP_LIST_FIELDS = ("app_name", "bundle_id", "version", "path")


def event_id(previous_snapshot_id: str | None, snapshot_id: str, change_type: str, device_id: str = "",
             app_key: tuple[str, ...] = ()) -> str:
    material = "\x1f".join((previous_snapshot_id or "", snapshot_id, change_type, device_id, *app_key))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def app_identity(app: dict[str, Any]) -> tuple[str, str, str]:
    """(bundle_id, app_name, path); app_name only counts when there is no bundle id.

    Two copies of one bundle at different paths are two apps.
    """
    bundle_id = app.get("bundle_id") or ""
    return bundle_id, "" if bundle_id else (app.get("app_name") or ""), app.get("path") or ""


def event_user(user: Any) -> dict[str, Any] | None:
    """The devices row's `user` as events carry it: {email, name}, or None when no user is assigned.

    Kandji's id and is_archived stay in the devices table: a reader wants who, not which record.
    """
    if not isinstance(user, dict):
        return None
    shown = {"email": user.get("email") or None, "name": user.get("name") or None}
    return shown if shown["email"] or shown["name"] else None


def device_event(change_type: str, *, snapshot_id: str, previous_snapshot_id: str | None, device: dict[str, Any],
                 severity: str = INFO, app_key: tuple[str, ...] = (), **payload: Any) -> dict[str, Any]:
    """One event about `device` (a parsed devices row) with the common fields first.

    The user is the one of the row given: the current snapshot's, the previous one's for a removed
    device. It is not part of event_id: the same change is the same event whoever holds the device.
    """
    device_id = str(device["device_id"])
    severity = highest((severity, CHANGE_TYPE_SEVERITY.get(change_type, INFO)))
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id(previous_snapshot_id, snapshot_id, change_type, device_id, app_key),
        "change_type": change_type,
        "severity": severity,
        "snapshot_id": snapshot_id,
        "previous_snapshot_id": previous_snapshot_id,
        "device_id": device_id,
        "device_name": device.get("device_name"),
        "serial_number": device.get("serial_number"),
        "platform": device.get("platform"),
        # Absent only when the devices row was never read (a device removed while unreadable): unknown.
        **({"user": event_user(device["user"])} if "user" in device else {}),
        **payload,
    }


def app_event(change_type: str, *, snapshot_id: str, previous_snapshot_id: str | None, device: dict[str, Any],
              before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    current = after if after is not None else before
    assert current is not None
    app = {
        "app_name": current.get("app_name"),
        "bundle_id": current.get("bundle_id"),
        "path": current.get("path"),
        "version": after.get("version") if after is not None else None,
        "previous_version": before.get("version") if before is not None else None,
    }
    return device_event(change_type, snapshot_id=snapshot_id, previous_snapshot_id=previous_snapshot_id,
                        device=device, app_key=app_identity(current), app=app)


def app_list(apps: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{name: app.get(name) for name in APP_LIST_FIELDS} for app in apps]


def encode_event(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


class EventTally:
    """Counts per change type and severity, for the summary and the metrics."""

    def __init__(self) -> None:
        self.by_change_type = {change_type: 0 for change_type in CHANGE_TYPES}
        self.by_severity = {severity: 0 for severity in SEVERITIES}
        self.total = 0

    def add(self, event: dict[str, Any]) -> None:
        self.by_change_type[event["change_type"]] = self.by_change_type.get(event["change_type"], 0) + 1
        self.by_severity[event["severity"]] = self.by_severity.get(event["severity"], 0) + 1
        self.total += 1

    @property
    def highest_severity(self) -> str:
        return highest(severity for severity, count in self.by_severity.items() if count)


class FieldTally:
    """How many device_changed events each field appears in: finds the field that floods a run."""

    MAX_FIELDS = 10_000  # distinct names kept (names repeat across devices; this bounds memory)

    def __init__(self) -> None:
        self.devices_changed = 0
        self._events_by_field: dict[str, int] = {}

    def add(self, event: dict[str, Any]) -> None:
        if event["change_type"] != DEVICE_CHANGED:
            return
        self.devices_changed += 1
        counts = self._events_by_field
        for field in {change["field"] for change in event.get("changes", ())}:
            if field in counts:
                counts[field] += 1
            elif len(counts) < self.MAX_FIELDS:
                counts[field] = 1

    def dominant(self, total_events: int, ignore_setting: str) -> dict[str, Any] | None:
        """The field in more than half of a run's events, and the setting that would silence it.

        Fields with a severity rule are never suggested: a mass FileVault change is news, not noise.
        """
        candidates = [(devices, field) for field, devices in self._events_by_field.items()
                      if field not in _SECURITY_FIELDS]
        if not candidates:
            return None
        devices, field = max(candidates)
        if devices * 2 <= total_events:
            return None
        pattern = re.sub(r"([*?\[])", r"[\1]", field)  # fnmatch: the field itself, nothing more
        return {"field": field, "devices": devices, "devices_changed": self.devices_changed,
                "silence_with": f"{ignore_setting}={pattern}"}


def summary_event(*, snapshot_id: str, previous_snapshot_id: str | None, tally: EventTally, device_count: int,
                  changes_uri: str, published_events: int, suppressed: bool,
                  max_events_per_run: int, noisy_field: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id(previous_snapshot_id, snapshot_id, SNAPSHOT_SUMMARY),
        "change_type": SNAPSHOT_SUMMARY,
        "severity": tally.highest_severity,
        "snapshot_id": snapshot_id,
        "previous_snapshot_id": previous_snapshot_id,
        "first_snapshot": previous_snapshot_id is None,
        "device_count": device_count,
        "event_count": tally.total,
        "counts": dict(tally.by_change_type),  # per change type
        "severity_counts": dict(tally.by_severity),
        "published_events": published_events,
        "suppressed": suppressed,  # over max_events_per_run: only the high-severity events were published
        "max_events_per_run": max_events_per_run,
        "noisy_field": noisy_field,  # on a suppressed run: the field that moved on most changed devices
        "changes_uri": changes_uri,
    }


# --- events too large for one message -----------------------------------------

LONG_VALUE_BYTES = 1024  # a before/after longer than this is cut first


def shrink_event(event: dict[str, Any], changes_uri: str, fits: Callable[[str], bool]) -> dict[str, Any]:
    """A smaller copy of `event` for which `fits(encoded)` holds; the full event stays in the changes file.

    Steps, each only if still needed: drop the `apps` list (keep its length), blank long
    before/after values, keep only the changes that fit, finally keep only the identifying fields.
    """
    small = dict(event, truncated=True, changes_uri=changes_uri)
    if "apps" in small:
        small["app_count"] = len(small.pop("apps") or [])
    if fits(encode_event(small)):
        return small
    if "changes" in small:
        small["change_count"] = len(small["changes"])
        small["changes"] = [_cut_long_values(change) for change in small["changes"]]
        if fits(encode_event(small)):
            return small
        kept = list(small["changes"])
        while kept and not fits(encode_event(dict(small, changes=kept))):
            kept = kept[: len(kept) // 2]
        small["changes"] = kept
        if fits(encode_event(small)):
            return small
    core = ("schema_version", "event_id", "change_type", "severity", "snapshot_id", "previous_snapshot_id",
            "device_id")
    minimal = {name: event.get(name) for name in core}
    minimal.update(truncated=True, changes_uri=changes_uri)
    return minimal


def _cut_long_values(change: dict[str, Any]) -> dict[str, Any]:
    cut = dict(change)
    for side in ("before", "after"):
        if len(json.dumps(change.get(side), ensure_ascii=False).encode()) > LONG_VALUE_BYTES:
            cut[side] = None
            cut[f"{side}_truncated"] = True
    return cut
