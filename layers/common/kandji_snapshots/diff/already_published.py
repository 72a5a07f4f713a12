"""Changes another diff already published, which a diff that takes its place must not send again.

A snapshot B diffed against A and published (FileVault turned off on a Mac). B's manifest is then
deleted (a part of it was lost), so the next snapshot C diffs against A instead, and finds the same
change. What B published stands (its changes file is kept, its events went out under their ids):
C drops every change B reported with the same outcome, and sends only what is new.

A change is the same when it is about the same device, of the same type, and ends the same: a field's
`after` value, an app's identity and version, a device added or removed. A tenant event (a threat, a
critical CVE, an admin action) is the same when everything it says but its ids and severity is; the
tenant summary counts what the run that replaces B read, so it is always sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from kandji_snapshots.diff.events import DEVICE_CHANGED
from kandji_snapshots.diff.progress import ChangesFile
from kandji_snapshots.diff.rules import highest
from kandji_snapshots.diff.tenant_changes import TENANT_PLATFORM, TENANT_SUMMARY
from kandji_snapshots.snapshots.storage import ObjectStore

logger = logging.getLogger(__name__)
_PER_RUN = frozenset({"event_id", "snapshot_id", "previous_snapshot_id", "severity"})  # differ by run, or by setting


def _change_key(change: dict[str, Any]) -> str:
    return repr((change.get("field"), change.get("after")))


def _event_key(event: dict[str, Any]) -> str:
    if event.get("platform") == TENANT_PLATFORM:  # a threat, CVE or admin action: the same when it says the same
        return json.dumps({name: value for name, value in event.items() if name not in _PER_RUN},
                          sort_keys=True, default=str)
    app = event.get("app") or {}
    return repr((event.get("change_type"), event.get("device_id"), app.get("bundle_id"), app.get("app_name"),
                 app.get("path"), app.get("version")))


class AlreadyPublished:
    def __init__(self, snapshot_id: str, events: Iterable[dict[str, Any]]):
        self.snapshot_id = snapshot_id
        self._events: set[str] = set()
        self._field_changes: dict[str, set[str]] = {}  # device_id -> its changed fields' outcomes
        for event in events:
            if event.get("change_type") == DEVICE_CHANGED:
                self._field_changes.setdefault(str(event.get("device_id")), set()).update(
                    _change_key(change) for change in event.get("changes") or [])
            else:
                self._events.add(_event_key(event))

    @classmethod
    def by(cls, store: ObjectStore, snapshot_id: str) -> "AlreadyPublished":
        """What `snapshot_id`'s diff reported: its changes file (none when it never got that far)."""
        changes_file = ChangesFile(store, snapshot_id)
        return cls(snapshot_id, changes_file.read() if changes_file.exists() else ())

    def remove_from(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        dropped = 0
        for event in events:
            if event.get("change_type") == DEVICE_CHANGED:
                known = self._field_changes.get(str(event.get("device_id")), set())
                changes = [change for change in event.get("changes") or [] if _change_key(change) not in known]
                if not changes:
                    dropped += 1
                    continue
                if len(changes) < len(event["changes"]):
                    dropped += 1
                    event = {**event, "changes": changes, "severity": highest(c["severity"] for c in changes)}
            elif event.get("change_type") != TENANT_SUMMARY and _event_key(event) in self._events:
                dropped += 1
                continue
            yield event
        if dropped:
            logger.warning(f"{dropped} changes were already published by the diff of snapshot {self.snapshot_id}, "
                           "which is no longer committed: not sent again", extra={"replaces": self.snapshot_id,
                                                                                 "not_sent_again": dropped})
