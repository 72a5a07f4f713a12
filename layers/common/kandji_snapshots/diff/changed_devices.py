"""The devices worth comparing, found by their fingerprints: the others are never parsed.

Both snapshots' fingerprint indexes (diff/fingerprints.py) are merge-joined by device_id. A device
in both with equal fingerprints in every table is skipped at the byte level: its rows' lengths
(from the index) are decompressed past, never split into lines nor parsed. A device whose
fingerprints differ, or that only one snapshot has, is read and paired as `merge_by_device` would
pair it, so the comparison decides what it means exactly as without the shortcut.

`changed_device_pairs` returns None when the shortcut cannot be trusted: a snapshot without
fingerprints (written before them), fingerprints of another format, or cut with ignore settings
the differ does not share (see FingerprintSettings.safe_for). The caller then compares every device.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from kandji_snapshots.diff.device_pairs import DevicePair
from kandji_snapshots.diff.fingerprints import FINGERPRINTED_TABLES, FingerprintSettings, IndexEntry, read_index
from kandji_snapshots.diff.rules import ChangeRules
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.device_rows import DeviceRows, SnapshotFormatError, row_head
from kandji_snapshots.snapshots.storage import ObjectStore

_COMPRESSED_CHUNK = 1 << 18


class TableBytes:
    """A table's parts as one uncompressed byte stream, read forward: taken, or skipped unsplit."""

    def __init__(self, store: ObjectStore, keys: list[str]):
        self._store = store
        self._keys = iter(keys)
        self._stream = None
        self._inflate = None
        self._pending = b""  # decompressed; consumed up to _position
        self._position = 0
        self._skip = 0  # bytes to drop before the next take: skips add up, dropped in one go

    def _next_chunk(self) -> bytes | None:
        """The next decompressed bytes; None at the end of the last part."""
        while True:
            if self._stream is None:
                key = next(self._keys, None)
                if key is None:
                    return None
                self._stream, self._inflate = self._store.open(key), zlib.decompressobj(wbits=31)
            chunk = self._stream.read(_COMPRESSED_CHUNK)
            data = self._inflate.decompress(chunk) if chunk else self._inflate.flush()
            if not chunk:
                self._stream.close()
                self._stream = None
            if data:
                return data

    def _refill(self) -> None:
        chunk = self._next_chunk()
        if chunk is None:
            raise SnapshotFormatError("a table is shorter than its fingerprint index says")
        self._pending, self._position = chunk, 0

    def skip(self, length: int) -> None:
        self._skip += length

    def take(self, length: int) -> bytes:
        while self._skip:
            available = len(self._pending) - self._position
            if not available:
                self._refill()
                continue
            dropped = min(self._skip, available)
            self._position += dropped
            self._skip -= dropped
        end = self._position + length
        if end <= len(self._pending):
            taken = self._pending[self._position:end]
            self._position = end
            return taken
        parts = [self._pending[self._position:]]
        needed = length - len(parts[0])
        while needed > 0:
            self._refill()
            part = self._pending[:needed]
            parts.append(part)
            self._position = len(part)
            needed -= len(part)
        return b"".join(parts)

    def finish(self) -> None:
        """Checks that the index accounted for every byte of the table."""
        self.take(0)
        if self._position < len(self._pending) or self._next_chunk() is not None:
            raise SnapshotFormatError("a table holds rows its fingerprint index does not list")


class _IndexedSnapshot:
    """One snapshot's four tables, read device by device as its fingerprint index lays them out."""

    def __init__(self, store: ObjectStore, manifest: Manifest):
        tables = manifest.document["tables"]
        self._tables = [TableBytes(store, list(tables[table]["keys"])) if table in tables else None
                        for table in FINGERPRINTED_TABLES]

    def skip(self, entry: IndexEntry) -> None:
        for table, length in zip(self._tables, entry.lengths):
            if table is not None:
                table.skip(length)

    def rows(self, entry: IndexEntry) -> DeviceRows:
        lines = [table.take(length).splitlines(keepends=True) if table is not None else []
                 for table, length in zip(self._tables, entry.lengths)]
        if len(lines[0]) != 1 or any(row_head(line, False)[0] != entry.device_id for group in lines for line in group):
            raise SnapshotFormatError(f"the fingerprint index does not match the tables at device {entry.device_id!r}")
        return DeviceRows.from_lines(lines[0][0], *lines[1:])

    def finish(self) -> None:
        for table in self._tables:
            if table is not None:
                table.finish()


def changed_device_pairs(store: ObjectStore, previous: Manifest, current: Manifest,
                         rules: ChangeRules) -> Iterator[DevicePair] | None:
    """The pairs `merge_by_device` would yield, less the devices whose fingerprints are all equal;
    None when the fingerprints cannot stand in for the comparison (then compare every device)."""
    settings = [FingerprintSettings.of_manifest(manifest) for manifest in (previous, current)]
    if settings[0] is None or settings[0] != settings[1] or not settings[0].safe_for(rules):
        return None
    return _pairs(store, previous, current)


def _pairs(store: ObjectStore, previous: Manifest, current: Manifest) -> Iterator[DevicePair]:
    before, after = _IndexedSnapshot(store, previous), _IndexedSnapshot(store, current)
    old_index, new_index = read_index(store, previous), read_index(store, current)
    old, new = next(old_index, None), next(new_index, None)
    while old is not None or new is not None:
        if new is None or (old is not None and old.device_id < new.device_id):
            yield DevicePair(old.device_id, before.rows(old), None)
            old = next(old_index, None)
        elif old is None or new.device_id < old.device_id:
            yield DevicePair(new.device_id, None, after.rows(new))
            new = next(new_index, None)
        else:
            if old.hashes == new.hashes:
                before.skip(old)
                after.skip(new)
            else:
                yield DevicePair(new.device_id, before.rows(old), after.rows(new))
            old, new = next(old_index, None), next(new_index, None)
    before.finish()
    after.finish()
