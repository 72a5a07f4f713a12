"""Posture changes of one device between two snapshots, and FileVault as one fact.

Unknown is not false. A category is compared only where both rows hold it: the collector carries
a category it could not read (or that had no row for the device) from the last read, marked in
`carried_from`, so a change made while it was unknown is compared with that read and published by
the run that reads it again; a category neither read nor carried is null, and nothing in it is
reported. Inside a row that is there, a value that is gone (null) is unknown too: no change,
unless a rule makes its going a finding ("XProtect disabled": a version it stopped reporting).

FileVault is reported by Prism (`posture.filevault.status`, every run) and by the device's
details (`filevault.filevault_enabled`, refreshed every few runs). Either one seeing it off
must raise "FileVault turned off" exactly once, in the run that first sees it. So the device's
FileVault state in a snapshot is one fact: Prism's when that snapshot's run read it for the
device, else what the last source that knew said: Prism's carried value, unless the details were
fetched in a later run than the one that read it. A Prism read that failed, a row without a
status, or details not re-read since Prism last spoke never produce a change. The high-severity
change is raised only when the fact goes from on to off, on the change of the source that says
so when there is one. A source that later catches up with what the other one already reported
(the details refreshed a few runs after Prism saw the flip, or Prism reporting a device the
details had already seen) is not reported again; a source that moves to a value the fact does
not hold is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kandji_snapshots.diff.field_changes import field_changes
from kandji_snapshots.diff.rules import FILEVAULT_FIELDS, HIGH, INFO, ChangeRules, turned_off
from kandji_snapshots.snapshots.device_rows import DeviceRows, row_keys
from kandji_snapshots.snapshots.schema import POSTURE_CATEGORY_COLUMNS

FILEVAULT_OFF = "FileVault turned off"
_POSTURE_FILEVAULT, _DETAILS_FILEVAULT = "posture.filevault.status", "filevault.filevault_enabled"
_CARRIED_FROM = "carried_from"


@dataclass(frozen=True)
class FileVaultSource:
    """What one source said of FileVault in one snapshot, and as of when it was known."""

    field: str  # the change field it reports on
    enabled: bool
    known_at: str  # ISO 8601 UTC text of one fixed width: compares as text
    fresh: bool = False  # read by this snapshot's run (Prism only: it is read every run)


class PostureComparison:
    def __init__(self, rules: ChangeRules):
        self._rules = rules

    def changes(self, before: DeviceRows, after: DeviceRows, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`changes` (the device's devices/details changes) plus its posture changes, FileVault reconciled."""
        old = json.loads(before.posture[0]) if before.posture else None
        new = json.loads(after.posture[0]) if after.posture else None
        if old is not None and new is not None:
            known = frozenset(name for name in POSTURE_CATEGORY_COLUMNS
                              if old.get(name) is not None and new.get(name) is not None)
            if known:
                changes = changes + [change for change in field_changes(self._rules, "device_posture",
                                                                        known_only(old, known), known_only(new, known))
                                     if change["after"] is not None or change["severity"] == HIGH]
        if not any(change["field"] in FILEVAULT_FIELDS for change in changes) and old == new:
            return changes  # FileVault cannot have moved: nothing to reconcile
        was, now = filevault_fact(filevault_sources(old, before)), filevault_fact(filevault_sources(new, after))
        return reconcile_filevault(changes, was.enabled if was else None, now.enabled if now else None,
                                   now.field if now else _POSTURE_FILEVAULT)


def known_only(row: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """A device_posture row with only the `known` categories (and their `extra` values) to compare."""
    row = {name: (value if name not in POSTURE_CATEGORY_COLUMNS or name in known else None)
           for name, value in row.items() if name != _CARRIED_FROM}
    if row.get("extra"):
        extra = {path: value for path, value in json.loads(row["extra"]).items() if path.split(".", 1)[0] in known}
        row["extra"] = json.dumps(extra, sort_keys=True, separators=(",", ":")) if extra else None
    return row


def filevault_sources(posture: dict[str, Any] | None, rows: DeviceRows) -> list[FileVaultSource]:
    """What Prism and the details said of FileVault in one snapshot (a source that did not say is left out).

    Prism's carried value is known as of the end of the run that read it (`carried_from`); the details
    as of when they were fetched, so details fetched later in that same run are not newer."""
    sources = []
    status = ((posture or {}).get("filevault") or {}).get("status")
    if status is not None:
        carried = (posture.get(_CARRIED_FROM) or {}).get("filevault")
        sources.append(FileVaultSource(_POSTURE_FILEVAULT, status, carried or posture["fetched_at"],
                                       fresh=carried is None))
    if rows.details and rows.details_known():
        enabled = (json.loads(rows.details[0]).get("filevault") or {}).get("filevault_enabled")
        if enabled is not None:
            sources.append(FileVaultSource(_DETAILS_FILEVAULT, enabled, row_keys(rows.details[0])[1] or ""))
    return sources


def filevault_fact(sources: list[FileVaultSource]) -> FileVaultSource | None:
    """The source whose word is the fact: Prism read now; else the one known last (Prism on a tie)."""
    if any(source.fresh for source in sources):
        return next(source for source in sources if source.fresh)
    return max(sources, key=lambda source: (source.known_at, source.field == _POSTURE_FILEVAULT), default=None)


def reconcile_filevault(changes: list[dict[str, Any]], was: bool | None, now: bool | None,
                        now_field: str = _POSTURE_FILEVAULT) -> list[dict[str, Any]]:
    """One change per device and FileVault transition, whichever source saw it first.

    The change that moves the fact (`was` -> `now`) reports it: Prism's when it has one, else the
    details'; the other source's change in the same event stays, as info. In a run where the fact
    does not move, a change of either source to the value the fact holds only catches up with what
    the other source reported when it moved, and is left out. A change to a value the fact does not
    hold (the details back on while Prism still says off) is news and stays, as info. A change from
    or to unknown (null) is no change: that source said nothing. "FileVault turned off" is the one
    high; when no change of the source that says so is here (it was unknown before), it is reported
    on `now_field`, the field of that source.
    """
    changes = [change for change in changes if change["field"] not in FILEVAULT_FIELDS
               or (change["before"] is not None and change["after"] is not None)]
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
    if reporting is None:  # the source that says "off" did not change here (it was unknown before)
        reporting = {"field": now_field, "before": was, "after": now}
        out.append(reporting)
    reporting["severity"], reporting["reason"] = HIGH, FILEVAULT_OFF
    return out
