"""A fingerprint per device and table: the device's rows as the differ compares them, hashed.

The collector computes them while it writes the rows (`FingerprintRecorder`, fed by TableWriter)
and stores them beside the snapshot: one gzip text object (layout.fingerprints_key), one line per
device in device_id order, listed in the manifest (`fingerprints`) and so committed with it:

    <device_id> TAB <4 hashes, space-separated> TAB <4 locations, space-separated> LF

in table order (devices, device_details, device_apps, device_posture). A location says where the
device's rows are: `<part>.<member>.<offset>.<bytes>` (table_io.RowLocation of its first row, and
how many uncompressed bytes its rows take), `-` when it has none; the differ reads them without
inflating the rest of the table (diff/changed_devices.py). Each hash is of what the comparison
looks at, cut with the differ's own functions (one definition):

- devices, device_details: the row after its per-snapshot prefix, check-in noise cut by the
  differ's `VolatileValues` for the table and ignore settings; equal cut bytes are the differ's
  "same row". The details' hash also says whether they were ever fetched (fetched_at null), which
  decides whether details and apps are known.
- device_apps: each row's body without what Kandji renumbers and restamps at every inventory
  (`without_inventory_noise`), sorted: the differ finds no app change between two equal multisets.
- device_posture: the row after its prefix, noise cut likewise, plus the device's FileVault fact
  (diff/posture_changes.py), which also depends on when each source spoke: equal facts and equal
  rows report nothing.

Equal fingerprints in every table mean the full comparison finds nothing for the device, as long as
the ignore settings they were cut with are ones the differ ignores too (`FingerprintSettings`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kandji_snapshots.diff.field_changes import VolatileValues, without_inventory_noise
from kandji_snapshots.diff.posture_changes import filevault_fact, filevault_sources
from kandji_snapshots.diff.rules import ChangeRules
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.device_rows import DeviceRows, row_head
from kandji_snapshots.snapshots.layout import fingerprints_key
from kandji_snapshots.snapshots.storage import ObjectStore
from kandji_snapshots.snapshots.table_io import RowLocation

# Raised whenever what is hashed, or how, or the index's layout changes: fingerprints of another format
# are not compared.
FINGERPRINT_FORMAT = 1
FINGERPRINTED_TABLES = ("devices", "device_details", "device_apps", "device_posture")
_CUT_TABLES = ("devices", "device_details", "device_posture")


@dataclass(frozen=True)
class FingerprintSettings:
    """What fingerprints were cut with: the format and the ignore patterns (the manifest's record)."""

    format: int
    ignored_fields: tuple[str, ...]

    @classmethod
    def of(cls, rules: ChangeRules) -> "FingerprintSettings":
        return cls(FINGERPRINT_FORMAT, tuple(rules.ignored_fields))

    @property
    def digest(self) -> str:
        text = json.dumps({"format": self.format, "ignored_fields": sorted(self.ignored_fields)})
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def of_manifest(cls, manifest: Manifest) -> "FingerprintSettings | None":
        """The settings a snapshot's fingerprints were cut with; None when it has none (older snapshots)."""
        record = manifest.document.get("fingerprints")
        if not isinstance(record, dict) or not isinstance(record.get("ignored_fields"), list):
            return None
        settings = cls(record.get("format"), tuple(record["ignored_fields"]))
        return settings if record.get("settings_digest") == settings.digest else None

    def safe_for(self, rules: ChangeRules) -> bool:
        """Equal fingerprints cut with these settings mean no change under `rules`: same format, and every
        field they cut out is ignored by `rules` too (cutting less than the differ ignores is safe)."""
        return self.format == FINGERPRINT_FORMAT and set(self.ignored_fields) <= set(rules.ignored_fields)


class DeviceFingerprints:
    """Hashes one device's rows as the comparison under `rules` sees them."""

    def __init__(self, rules: ChangeRules):
        self._cuts = {table: VolatileValues.for_table(table, rules) for table in _CUT_TABLES}

    def _cut(self, table: str, line: bytes, head: int) -> bytes:
        volatile = self._cuts[table]
        return volatile.strip(line, head) if volatile is not None else line[head:]

    def of(self, rows: DeviceRows) -> tuple[str, str, str, str]:
        """(devices, device_details, device_apps, device_posture) hashes of the device."""
        device = _hash([self._cut("devices", rows.device, rows.device_head)])
        details = _hash([b"known" if rows.details_known() else b"unknown",
                         *(self._cut("device_details", line, _head(line)) for line in rows.details)])
        apps = _hash(sorted(without_inventory_noise(body) for body in rows.app_bodies()))
        posture = json.loads(rows.posture[0]) if rows.posture else None
        fact = filevault_fact(filevault_sources(posture, rows))
        posture_hash = _hash([json.dumps(fact.enabled if fact else None).encode(),
                              *(self._cut("device_posture", line, _head(line)) for line in rows.posture)])
        return device, details, apps, posture_hash


def _head(line: bytes) -> int:
    return row_head(line, True)[1]


def _hash(parts: list[bytes]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:  # length-prefixed: no two lists of parts hash the same bytes
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True)
class Location:
    """Where one device's rows of one table are (see the module docstring)."""

    part: int
    member: int
    offset: int
    length: int


@dataclass(frozen=True)
class IndexEntry:
    """One device's line of the index; the locations are parsed only for a device that is read."""

    device_id: bytes
    hashes: bytes
    raw_locations: bytes

    def locations(self) -> list[Location | None]:
        return [None if text == b"-" else Location(*map(int, text.split(b".")))
                for text in self.raw_locations.split(b" ")]


class FingerprintRecorder:
    """Sees every row the collector writes (TableWriter's `on_line`) and fingerprints each device.

    The collector writes a device's rows in all four tables before the next device's, so a device is
    complete when another device's row (or the end) comes.
    """

    def __init__(self, rules: ChangeRules):
        self.settings = FingerprintSettings.of(rules)
        self._fingerprints = DeviceFingerprints(rules)
        self._device_id: str | None = None
        self._lines: dict[str, list[bytes]] = {table: [] for table in FINGERPRINTED_TABLES}
        self._starts: dict[str, RowLocation] = {}
        self._buffer = io.BytesIO()  # the index, compressed as it grows: memory stays flat
        self._out = gzip.GzipFile(fileobj=self._buffer, mode="wb", compresslevel=6, mtime=0)
        self.devices = 0
        self._written: list[str] = []

    def on_line(self, table: str) -> Callable[[bytes, str, RowLocation], None]:
        def seen(line: bytes, device_id: str, location: RowLocation) -> None:
            if device_id != self._device_id:
                self._finish_device()
                self._device_id = device_id
            lines = self._lines[table]
            if not lines:
                self._starts[table] = location
            lines.append(line)
        return seen

    def _finish_device(self) -> None:
        if self._device_id is None:
            return
        lines = self._lines
        if len(lines["devices"]) != 1:  # cannot happen (one devices row per device): fingerprint nothing
            raise AssertionError(f"device {self._device_id} has {len(lines['devices'])} devices rows")
        rows = DeviceRows.from_lines(lines["devices"][0], lines["device_details"], lines["device_apps"],
                                     lines["device_posture"])
        hashes = " ".join(self._fingerprints.of(rows))
        locations = " ".join(
            ".".join(map(str, (*self._starts[table], sum(map(len, lines[table]))))) if lines[table] else "-"
            for table in FINGERPRINTED_TABLES)
        self._out.write(f"{self._device_id}\t{hashes}\t{locations}\n".encode())
        self.devices += 1
        self._lines = {table: [] for table in FINGERPRINTED_TABLES}
        self._starts = {}

    def write(self, store: ObjectStore, snapshot_id: str) -> dict[str, Any]:
        """Stores the index; returns the manifest's `fingerprints` record."""
        self._finish_device()
        self._device_id = None
        key = fingerprints_key(snapshot_id)
        self._out.close()
        self._written.append(key)
        store.put(key, self._buffer.getvalue(), content_type="text/tab-separated-values", content_encoding="gzip")
        return {"key": key, "format": self.settings.format, "ignored_fields": list(self.settings.ignored_fields),
                "settings_digest": self.settings.digest, "devices": self.devices}

    def abort(self) -> list[str]:
        """The run failed: the key of the index if it may have been written, to delete (as TableWriter.abort)."""
        return list(self._written)


def read_index(store: ObjectStore, manifest: Manifest) -> Iterator[IndexEntry]:
    """A snapshot's fingerprint index, in device_id order, streamed."""
    with gzip.GzipFile(fileobj=store.open(manifest.document["fingerprints"]["key"]), mode="rb") as stream:
        for line in io.BufferedReader(stream, buffer_size=1 << 20):
            device_id, hashes, locations = line.rstrip(b"\n").split(b"\t")
            yield IndexEntry(device_id, hashes, locations)
