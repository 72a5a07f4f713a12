"""A snapshot read one device at a time, its rows still raw bytes.

The three tables of a snapshot are each sorted by device_id, so `iter_device_rows` merges
them in one pass: each device comes with its details and apps rows, and nothing but the
current device's rows is held in memory. Rows are not parsed: `row_head` finds where a
row's per-snapshot prefix (`snapshot_id`, `device_id`, `fetched_at`) ends, so two
snapshots' rows can be compared as bytes after it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.storage import ObjectStore
from kandji_snapshots.snapshots.table_io import iter_lines

logger = logging.getLogger(__name__)


class SnapshotFormatError(KandjiSnapshotsError):
    """A snapshot row does not start the way normalize.encode_row writes rows."""


_ROW_START = b'{"snapshot_id":"'
_DEVICE_ID_KEY = b'","device_id":"'
_FETCHED_AT_TEXT = b'"fetched_at":"'
_FETCHED_AT_NULL = b'"fetched_at":null,'


def _string_end(line: bytes, start: int) -> int:
    """Index of the quote closing the JSON string that starts at `start` (after its opening quote)."""
    end = line.find(b'"', start)
    while end > 0:
        backslashes = 0
        while line[end - 1 - backslashes] == 0x5C:
            backslashes += 1
        if backslashes % 2 == 0:
            return end
        end = line.find(b'"', end + 1)
    raise SnapshotFormatError(f"unterminated string in row {line[:120]!r}")


def row_head(line: bytes, with_fetched_at: bool) -> tuple[bytes, int]:
    """(device_id as it is written, length of the row's per-snapshot prefix).

    encode_row writes columns in schema order, so every row starts
    `{"snapshot_id":"…","device_id":"…",` and details/apps rows go on with `"fetched_at":"…",`.
    What follows the prefix is the same bytes in two snapshots when the device did not change.
    """
    start = line.find(_DEVICE_ID_KEY, len(_ROW_START)) + len(_DEVICE_ID_KEY)
    if start < len(_DEVICE_ID_KEY) or not line.startswith(_ROW_START):
        raise SnapshotFormatError(f"row does not start with snapshot_id and device_id: {line[:120]!r}")
    end = line.find(b'"', start)
    if end < 0 or line[end - 1] == 0x5C:  # an escaped quote inside the id: walk it properly
        end = _string_end(line, start)
    head = end + 2  # past `",`
    if with_fetched_at:
        if line.startswith(_FETCHED_AT_TEXT, head):
            head = line.index(b'"', head + len(_FETCHED_AT_TEXT)) + 2
        elif line.startswith(_FETCHED_AT_NULL, head):
            head += len(_FETCHED_AT_NULL)
    return line[start:end], head


def row_keys(line: bytes) -> tuple[str, str | None]:
    """(device_id, fetched_at) of a details or apps row, from its prefix, without parsing the row.
    fetched_at is None for a device the collector listed but never fetched."""
    device_id, head = row_head(line, False)
    if line.startswith(_FETCHED_AT_TEXT, head):
        start = head + len(_FETCHED_AT_TEXT)
        end = line.find(b'"', start)
        if end > 0:
            return device_id.decode(), line[start:end].decode()
    elif line.startswith(_FETCHED_AT_NULL[:-1], head):
        return device_id.decode(), None
    raise SnapshotFormatError(f"row has no fetched_at after its device_id: {line[:120]!r}")


class _TableCursor:
    """One table of one snapshot, handed out one device at a time (rows are sorted by device_id)."""

    def __init__(self, lines: Iterator[bytes], with_fetched_at: bool):
        self._lines = lines
        self._with_fetched_at = with_fetched_at
        self._line: bytes | None = None
        self._device_id = b""
        self._head = 0
        self.orphan_rows = 0  # rows of a device the devices table does not list
        self._set(next(self._lines, None))

    def _set(self, line: bytes | None) -> None:
        self._line = line
        if line is not None:
            self._device_id, self._head = row_head(line, self._with_fetched_at)

    def take(self, device_id: bytes) -> tuple[list[bytes], bytes | None]:
        """The rows of `device_id`, and the prefix they all share (None if they do not share one)."""
        rows: list[bytes] = []
        prefix: bytes | None = None
        shared = True
        while self._line is not None:
            if self._device_id < device_id:
                self.orphan_rows += 1
                self._set(next(self._lines, None))
                continue
            if self._device_id != device_id:
                break
            line_prefix = self._line[:self._head]
            if prefix is None:
                prefix = line_prefix
            elif line_prefix != prefix:
                shared = False
            rows.append(self._line)
            self._line = None
            for line in self._lines:  # hot loop: a device's rows share one prefix
                if line.startswith(line_prefix):
                    rows.append(line)
                else:
                    self._set(line)
                    break
        return rows, (prefix if shared else None)


@dataclass(slots=True)
class DeviceRows:
    """One device's rows in one snapshot, still raw."""

    device_id: bytes
    device: bytes
    device_head: int  # where the devices row's per-snapshot prefix ends
    details: list[bytes]
    details_prefix: bytes | None  # the prefix all details rows share, if they do
    apps: list[bytes]
    apps_prefix: bytes | None
    _parsed: dict[str, Any] | None = field(default=None, repr=False)
    posture: list[bytes] = field(default_factory=list)  # device_posture rows (older snapshots have none)

    @property
    def device_row(self) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = json.loads(self.device)
        return self._parsed

    @classmethod
    def from_lines(cls, device: bytes, details: list[bytes], apps: list[bytes], posture: list[bytes]) -> "DeviceRows":
        """One device's rows read some other way than iter_device_rows (diff/changed_devices.py)."""
        device_id, head = row_head(device, False)
        return cls(device_id, device, head, details, _shared_prefix(details), apps, _shared_prefix(apps),
                   posture=posture)

    def details_known(self) -> bool:
        """False for a device the collector listed but never fetched (details written with fetched_at null)."""
        if not self.details:
            return False
        line = self.details[0]
        return not line.startswith(_FETCHED_AT_NULL, row_head(line, False)[1])

    def apps_known(self) -> bool:
        """A never-fetched device has no app rows because nobody looked, not because it has no apps."""
        return bool(self.apps) or self.details_known()

    def details_head(self) -> int:
        return len(self.details_prefix) if self.details_prefix is not None else row_head(self.details[0], True)[1]

    def app_bodies(self) -> list[bytes]:
        """App rows without their per-snapshot prefix: equal bodies are the same app row."""
        if self.apps_prefix is not None:
            skip = len(self.apps_prefix)
            return [line[skip:] for line in self.apps]
        return [line[row_head(line, True)[1]:] for line in self.apps]


def _shared_prefix(lines: list[bytes]) -> bytes | None:
    """The per-snapshot prefix all `lines` share (details/apps rows), None if they do not share one."""
    if not lines:
        return None
    prefix = lines[0][:row_head(lines[0], True)[1]]
    return prefix if all(line.startswith(prefix) for line in lines) else None


def iter_device_rows(store: ObjectStore, manifest: Manifest) -> Iterator[DeviceRows]:
    """Every device of a snapshot with its details and apps rows, in device_id order, streamed."""
    details = _TableCursor(iter_lines(store, manifest.table_keys("device_details")), True)
    apps = _TableCursor(iter_lines(store, manifest.table_keys("device_apps")), True)
    posture = (_TableCursor(iter_lines(store, manifest.table_keys("device_posture")), True)
               if "device_posture" in manifest.document["tables"] else None)
    for line in iter_lines(store, manifest.table_keys("devices")):
        device_id, head = row_head(line, False)
        detail_rows, details_prefix = details.take(device_id)
        app_rows, apps_prefix = apps.take(device_id)
        rows = DeviceRows(device_id, line, head, detail_rows, details_prefix, app_rows, apps_prefix)
        if posture is not None:
            rows.posture = posture.take(device_id)[0]
        yield rows
    if details.orphan_rows or apps.orphan_rows:
        logger.warning("rows of devices missing from the devices table were ignored",
                       extra={"snapshot_id": manifest.snapshot_id, "details_rows": details.orphan_rows,
                              "apps_rows": apps.orphan_rows})
