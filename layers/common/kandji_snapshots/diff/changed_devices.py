"""The devices worth comparing, found by their fingerprints: the others are never parsed.

Both snapshots' fingerprint indexes (diff/fingerprints.py) are merge-joined by device_id. A device
in both with equal fingerprints in every table is skipped unread: the index says where each device's
rows are (a gzip member of a part, table_io.MEMBER_BYTES), and only the members of devices that are
read get inflated; the rest is not decompressed, split nor parsed. A device whose
fingerprints differ, or that only one snapshot has, is read and paired as `merge_by_device` would
pair it, so the comparison decides what it means exactly as without the shortcut.

When more than half of the first SAMPLE_DEVICES devices changed (a mass update), the rest is compared
in full (`with_fallback`): reading member by member would cost more than streaming every device.
`changed_device_pairs` returns None when the shortcut cannot be trusted: a snapshot without
fingerprints (written before them), fingerprints of another format, or cut with ignore settings
the differ does not share (see FingerprintSettings.safe_for). The caller then compares every device.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator

from kandji_snapshots.diff.device_pairs import DevicePair, after_checkpoint
from kandji_snapshots.diff.fingerprints import (
    FINGERPRINTED_TABLES,
    FingerprintSettings,
    IndexEntry,
    Location,
    read_index,
)
from kandji_snapshots.diff.rules import ChangeRules
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.device_rows import DeviceRows, SnapshotFormatError, row_head
from kandji_snapshots.snapshots.storage import ObjectStore

_COMPRESSED_CHUNK = 1 << 16
# What a damaged index or table part raises while the fingerprinted pairs are read.
UNREADABLE_INDEX = (SnapshotFormatError, OSError, EOFError, ValueError, zlib.error)
logger = logging.getLogger(__name__)
# After this many devices in both snapshots, if more than half of them changed (a mass update), the
# rest is compared in full: reading member by member would cost more than streaming every device.
SAMPLE_DEVICES = 2000


class MostlyChanged(Exception):
    """Most devices changed: the fingerprints would save nothing."""


class TableMembers:
    """A table's parts read forward, one gzip member at a time: only the members a read device is in
    are inflated; the compressed bytes before them are skipped (sought past where the store allows)."""

    def __init__(self, store: ObjectStore, keys: list[str]):
        self._store = store
        self._keys = keys
        self._part = -1
        self._stream = None
        self._position = 0  # where `_buffer` starts in the part
        self._buffer = b""  # compressed bytes read, not yet inflated
        self._member: tuple[int, int] | None = None  # (part, start) of the member in `_data`
        self._data = b""

    def _open(self, part: int) -> None:
        if part >= len(self._keys):
            raise SnapshotFormatError("the fingerprint index points past the table's last part")
        if self._stream is not None:
            self._stream.close()
        self._part, self._stream = part, self._store.open(self._keys[part])
        self._position, self._buffer = 0, b""

    def _seek(self, part: int, start: int) -> None:
        if part != self._part:
            if part < self._part:
                raise SnapshotFormatError("the fingerprint index is not in table order")
            self._open(part)
        ahead = start - self._position
        if ahead < 0:
            raise SnapshotFormatError("the fingerprint index is not in table order")
        if ahead <= len(self._buffer):
            self._buffer = self._buffer[ahead:]
        else:
            beyond = ahead - len(self._buffer)
            if self._stream.seekable():
                self._stream.seek(beyond, 1)
            else:  # a network stream: the bytes go by, uninflated
                while beyond > 0:
                    skipped = len(self._stream.read(min(beyond, 1 << 20)))
                    if not skipped:
                        raise SnapshotFormatError("the fingerprint index points past the end of a part")
                    beyond -= skipped
            self._buffer = b""
        self._position = start

    def _inflate(self) -> None:
        """The member at the current position into `_data`."""
        start = self._position
        inflate = zlib.decompressobj(wbits=31)  # one member: it stops at the member's trailer
        pieces = []
        while not inflate.eof:
            if not self._buffer:
                self._buffer = self._stream.read(_COMPRESSED_CHUNK)
                if not self._buffer:
                    raise SnapshotFormatError("a table part ends inside a gzip member")
            pieces.append(inflate.decompress(self._buffer))
            used = len(self._buffer) - len(inflate.unused_data)
            self._position += used
            self._buffer = inflate.unused_data
        self._member, self._data = (self._part, start), b"".join(pieces)

    def _next_member(self) -> None:
        """The member after the current one: in this part, or the first of the next part."""
        if not self._buffer:
            self._buffer = self._stream.read(_COMPRESSED_CHUNK)
        if not self._buffer:
            self._open(self._part + 1)
        self._inflate()

    def take(self, location: Location) -> bytes:
        """A device's rows: from its member, and on into the next ones when a part ended inside them."""
        if self._member != (location.part, location.member):
            self._seek(location.part, location.member)
            self._inflate()
        pieces = [self._data[location.offset:location.offset + location.length]]
        needed = location.length - len(pieces[0])
        while needed > 0:
            self._next_member()
            pieces.append(self._data[:needed])
            needed -= len(pieces[-1])
        return b"".join(pieces)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


class _IndexedSnapshot:
    """One snapshot's four tables, read device by device where its fingerprint index says."""

    def __init__(self, store: ObjectStore, manifest: Manifest):
        tables = manifest.document["tables"]
        self._tables = [TableMembers(store, list(tables[table]["keys"])) if table in tables else None
                        for table in FINGERPRINTED_TABLES]

    def rows(self, entry: IndexEntry) -> DeviceRows:
        lines = [table.take(location).splitlines(keepends=True) if table is not None and location else []
                 for table, location in zip(self._tables, entry.locations())]
        if len(lines[0]) != 1 or any(row_head(line, False)[0] != entry.device_id for group in lines for line in group):
            raise SnapshotFormatError(f"the fingerprint index does not match the tables at device {entry.device_id!r}")
        return DeviceRows.from_lines(lines[0][0], *lines[1:])

    def close(self) -> None:
        for table in self._tables:
            if table is not None:
                table.close()


def changed_device_pairs(store: ObjectStore, previous: Manifest, current: Manifest,
                         rules: ChangeRules) -> Iterator[DevicePair] | None:
    """The pairs `merge_by_device` would yield, less the devices whose fingerprints are all equal;
    None when the fingerprints cannot stand in for the comparison (then compare every device)."""
    settings = [FingerprintSettings.of_manifest(manifest) for manifest in (previous, current)]
    if settings[0] is None or settings[0] != settings[1] or not settings[0].safe_for(rules):
        return None
    return _pairs(store, previous, current)


def with_fallback(fingerprinted: Iterator[DevicePair], every_device: Callable[[], Iterator[DevicePair]],
                  compared_through: bytes | None, snapshot_id: str) -> Iterator[DevicePair]:
    """The fingerprinted pairs; should the index turn out unreadable or not match the tables, every device
    past the last pair taken, compared in full: a bad index costs time, never a change, and never blocks."""
    try:
        for pair in fingerprinted:
            yield pair
            compared_through = pair.device_id
    except MostlyChanged:
        logger.info("most devices changed: comparing every device", extra={"snapshot_id": snapshot_id})
        yield from after_checkpoint(every_device(), compared_through)
    except UNREADABLE_INDEX as error:
        logger.warning("fingerprint index unusable: comparing every device",
                       extra={"snapshot_id": snapshot_id, "error": str(error)[:300],
                              "after_device": compared_through.decode(errors="replace") if compared_through else None})
        yield from after_checkpoint(every_device(), compared_through)


def _pairs(store: ObjectStore, previous: Manifest, current: Manifest) -> Iterator[DevicePair]:
    before, after = _IndexedSnapshot(store, previous), _IndexedSnapshot(store, current)
    old_index, new_index = read_index(store, previous), read_index(store, current)
    old, new = next(old_index, None), next(new_index, None)
    both = changed = 0  # devices in both snapshots so far, and how many of them changed
    while old is not None or new is not None:
        if new is None or (old is not None and old.device_id < new.device_id):
            yield DevicePair(old.device_id, before.rows(old), None)
            old = next(old_index, None)
        elif old is None or new.device_id < old.device_id:
            yield DevicePair(new.device_id, None, after.rows(new))
            new = next(new_index, None)
        else:
            differs = old.hashes != new.hashes
            both, changed = both + 1, changed + differs
            if both == SAMPLE_DEVICES and changed * 2 > both:
                raise MostlyChanged()
            if differs:
                yield DevicePair(new.device_id, before.rows(old), after.rows(new))
            old, new = next(old_index, None), next(new_index, None)
    before.close()
    after.close()
