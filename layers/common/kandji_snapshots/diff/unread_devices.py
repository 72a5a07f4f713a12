"""The skip rules: a device a snapshot listed but could not read (404 mid-run) is unknown there.

An unknown device is neither added nor removed by the snapshot that could not read it. Its manifest
(`skipped_devices`) says which devices those are, whether their rows were carried from an earlier
snapshot, and what was known of them (name, serial, platform).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kandji_snapshots.snapshots.catalog import Manifest


class UnreadDevices:
    """What the two snapshots' skipped devices mean for a comparison between them."""

    def __init__(self, previous: Manifest, current: Manifest):
        self._unknown_before = {device_id.encode() for device_id in previous.skipped_device_ids}
        self._unknown_now = {device_id.encode() for device_id in current.skipped_device_ids}
        # Skipped with nothing to carry although the collector had a snapshot to carry from: new
        # then, and never announced, so announced as added once it is read.
        self._new_unread_before = {str(item["device_id"]).encode()
                                   for item in previous.document.get("skipped_devices", [])
                                   if item.get("carried") is False and previous.document.get("previous_snapshot_id")}
        self._skipped_before = {str(item["device_id"]).encode(): item
                                for item in previous.document.get("skipped_devices", [])}

    def removal_counts(self, device_id: bytes) -> bool:
        """A device only the previous snapshot has rows for: removed, unless this one could not read it."""
        return device_id not in self._unknown_now

    def addition_counts(self, device_id: bytes) -> bool:
        """A device only this snapshot has rows for: added, unless the previous one listed it unread."""
        return device_id not in self._unknown_before or device_id in self._new_unread_before

    def unlisted_since(self, compared_through: bytes | None) -> Iterator[bytes]:
        """Skipped by the previous snapshot and not listed by this one (the 404 was an unenrolment), in
        device_id order, past `compared_through` (devices an earlier attempt compared)."""
        return iter(sorted(device_id for device_id in self._unknown_before - self._unknown_now
                           if compared_through is None or device_id > compared_through))

    def last_known(self, device_id: bytes) -> dict[str, Any]:
        """What the previous manifest kept of a device it could not read: its rows were never written."""
        item = self._skipped_before[device_id]
        return {"device_id": item["device_id"], "device_name": item.get("device_name"),
                "serial_number": item.get("serial_number"), "platform": item.get("platform")}
