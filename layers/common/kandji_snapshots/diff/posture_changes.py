"""Posture changes of one device between two snapshots, and FileVault as one fact.

Only categories both snapshots read are compared: a category the token could not read in
one of them (403, skipped) is unknown there, not empty, so nothing in it is reported.

FileVault is reported by Prism (`posture.filevault.status`, every run) and by the device's
details (`filevault.filevault_enabled`, refreshed every few runs). Either one seeing it off
must raise "FileVault turned off" exactly once, in the run that first sees it. So the device's
FileVault state in a snapshot is one fact, Prism's when that snapshot read it for the device,
else the details'; the high-severity change is raised only when that fact goes from on to off,
on the posture change when there is one, else on the details change. A source that later
catches up with what the other one already reported (the details refreshed a few runs after
Prism saw the flip, or Prism reporting a device the details had already seen) is not reported
again; a source that moves to a value the fact does not hold is.
"""

from __future__ import annotations

import json
from typing import Any

from kandji_snapshots.diff.field_changes import field_changes
from kandji_snapshots.diff.rules import FILEVAULT_FIELDS, HIGH, INFO, ChangeRules, turned_off
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.device_rows import DeviceRows
from kandji_snapshots.snapshots.schema import POSTURE_CATEGORY_COLUMNS

FILEVAULT_OFF = "FileVault turned off"
_POSTURE_FILEVAULT, _DETAILS_FILEVAULT = "posture.filevault.status", "filevault.filevault_enabled"


def read_categories(manifest: Manifest) -> frozenset[str]:
    """The posture categories a snapshot read completely (its manifest's `posture` section)."""
    categories = (manifest.document.get("posture") or {}).get("categories") or {}
    return frozenset(name for name, read in categories.items() if read.get("status") == "read")


class PostureComparison:
    def __init__(self, rules: ChangeRules, previous: Manifest, current: Manifest):
        self._rules = rules
        self._read_before = read_categories(previous)
        self._read_after = read_categories(current)
        self._comparable = self._read_before & self._read_after

    def changes(self, before: DeviceRows, after: DeviceRows, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`changes` (the device's devices/details changes) plus its posture changes, FileVault reconciled."""
        old = json.loads(before.posture[0]) if before.posture else None
        new = json.loads(after.posture[0]) if after.posture else None
        if old is not None and new is not None and self._comparable:
            changes = changes + field_changes(self._rules, "device_posture", self._only_comparable(old),
                                              self._only_comparable(new))
        if not any(change["field"] in FILEVAULT_FIELDS for change in changes) and old == new:
            return changes  # FileVault cannot have moved: nothing to reconcile
        was = self._filevault(old, before, self._read_before)
        now = self._filevault(new, after, self._read_after)
        return reconcile_filevault(changes, was, now)

    def _only_comparable(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {name: (value if name not in POSTURE_CATEGORY_COLUMNS or name in self._comparable else None)
               for name, value in row.items()}
        if row.get("extra"):
            extra = {path: value for path, value in json.loads(row["extra"]).items()
                     if path.split(".", 1)[0] in self._comparable}
            row["extra"] = json.dumps(extra, sort_keys=True, separators=(",", ":")) if extra else None
        return row

    @staticmethod
    def _filevault(posture: dict[str, Any] | None, rows: DeviceRows, read: frozenset[str]) -> bool | None:
        """The device's FileVault state in one snapshot: Prism's if it reported it, else the details'."""
        if posture is not None and "filevault" in read:
            status = (posture.get("filevault") or {}).get("status")
            if status is not None:
                return status
        if rows.details and rows.details_known():
            return (json.loads(rows.details[0]).get("filevault") or {}).get("filevault_enabled")
        return None


def reconcile_filevault(changes: list[dict[str, Any]], was: bool | None, now: bool | None) -> list[dict[str, Any]]:
    """One change per device and FileVault transition, whichever source saw it first.

    The change that moves the fact (`was` -> `now`) reports it: Prism's when it has one, else the
    details'; the other source's change in the same event stays, as info. In a run where the fact
    does not move, a change of either source to the value the fact holds only catches up with what
    the other source reported when it moved, and is left out. A change to a value the fact does not
    hold (the details back on while Prism still says off) is news and stays, as info. "FileVault
    turned off" is the one high.
    """
    moved = was != now
    reporting = None
    if moved:
        reporting = next((change for field in (_POSTURE_FILEVAULT, _DETAILS_FILEVAULT) for change in changes
                          if change["field"] == field and change["after"] is now), None)
    out = []
    for change in changes:
        if change["field"] in FILEVAULT_FIELDS:
            if not moved and now is not None and change["after"] is now:
                continue  # catches up with the fact: reported in the run it moved
            copy = {key: value for key, value in change.items() if key != "reason"}  # info, unless it is the one
            copy["severity"] = INFO
            if change is reporting:
                reporting = copy  # the copy is what goes out: it is the one made high below
            change = copy
        out.append(change)
    if not turned_off(was, now):
        return out
    if reporting is None:  # the source that says "off" did not change here (e.g. Prism unread before)
        reporting = {"field": _POSTURE_FILEVAULT, "before": was, "after": now}
        out.append(reporting)
    reporting["severity"], reporting["reason"] = HIGH, FILEVAULT_OFF
    return out
