"""Reading and writing snapshot tables: gzip JSON Lines, streamed in parts.

A table is written row by row into a gzip buffer that is flushed to the store
every `rows_per_part` rows, so memory stays flat however large the fleet. A
table that fits in one part is named `<snapshot_id>.json.gz`; a larger one
becomes `<snapshot_id>-00000.json.gz`, `-00001`, ... in row order.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from kandji_snapshots.snapshots.layout import table_part_key
from kandji_snapshots.snapshots.normalize import encode_row
from kandji_snapshots.snapshots.storage import ObjectStore

DEFAULT_ROWS_PER_PART = 100_000
# A part is a series of gzip members (one gzip file to every reader: Athena, DuckDB, Python's gzip),
# each started at a device's first row once the one before holds this many uncompressed bytes. A
# reader that knows where a device's rows are (the fingerprint index) inflates only their member.
MEMBER_BYTES = 128 * 1024


class RowLocation(NamedTuple):
    """Where a row starts: part number, the byte its gzip member starts at, its offset in the member."""

    part: int
    member: int
    offset: int


class TableWriter:
    def __init__(self, store: ObjectStore, table: str, snapshot_id: str, *,
                 rows_per_part: int = DEFAULT_ROWS_PER_PART, day: str | None = None,
                 on_line: Callable[[bytes, str, RowLocation], None] | None = None):
        self._day = day  # the partition, when it is not the snapshot's day
        self._store = store
        self._on_line = on_line  # sees every row written (the collector's fingerprints)
        self._table = table
        self._snapshot_id = snapshot_id
        self._rows_per_part = rows_per_part
        self._held: bytes | None = None  # the first part, held until we know whether a second follows
        self._buffer: io.BytesIO | None = None
        self._gzip: gzip.GzipFile | None = None
        self._rows_in_part = 0
        self._member_start = 0  # where the current gzip member starts in the part
        self._member_bytes = 0  # uncompressed bytes in it so far
        self._parts = 0
        self.rows = 0
        self.keys: list[str] = []
        self.last_device_id: str | None = None

    def write(self, row: dict[str, Any]) -> None:
        self.write_line(encode_row(row), row["device_id"])

    def write_line(self, line: bytes, device_id: str) -> None:
        """Append an already encoded row (carried rows are copied without re-encoding)."""
        if self.last_device_id is not None and device_id < self.last_device_id:
            raise AssertionError(f"{self._table} rows out of device_id order: {device_id} after "
                                 f"{self.last_device_id}")
        new_device = device_id != self.last_device_id
        self.last_device_id = device_id
        if self._gzip is None:
            self._buffer = io.BytesIO()
            self._start_member()
        elif new_device and self._member_bytes >= MEMBER_BYTES:
            self._gzip.close()  # the member's trailer; the part goes on with the next member
            self._start_member()
        if self._on_line is not None:
            self._on_line(line, device_id, RowLocation(self._parts, self._member_start, self._member_bytes))
        self._gzip.write(line)
        self._member_bytes += len(line)
        self._rows_in_part += 1
        self.rows += 1
        if self._rows_in_part >= self._rows_per_part:
            self._finish_part()

    def _start_member(self) -> None:
        assert self._buffer is not None
        self._member_start, self._member_bytes = self._buffer.tell(), 0
        self._gzip = gzip.GzipFile(fileobj=self._buffer, mode="wb", compresslevel=6, mtime=0)

    def _finish_part(self) -> None:
        assert self._gzip is not None and self._buffer is not None
        self._gzip.close()
        body = self._buffer.getvalue()
        self._gzip = self._buffer = None
        self._rows_in_part = 0
        if self._parts == 0:
            self._held = body
        else:
            if self._held is not None:
                self._put(table_part_key(self._table, self._snapshot_id, 0, self._day), self._held)
                self._held = None
            self._put(table_part_key(self._table, self._snapshot_id, self._parts, self._day), body)
        self._parts += 1

    def _put(self, key: str, body: bytes) -> None:
        self._store.put(key, body, content_type="application/x-ndjson", content_encoding="gzip")
        self.keys.append(key)

    def abort(self) -> list[str]:
        """Drop what is buffered (the run failed); returns the keys already written, to delete."""
        if self._gzip is not None:
            self._gzip.close()
        self._gzip = self._buffer = self._held = None
        return list(self.keys)

    def close(self) -> dict[str, Any]:
        """Flush what is left; an empty table still gets one (empty) object so readers need no special case."""
        if self._gzip is not None or self.rows == 0:
            if self._gzip is None:
                self._buffer = io.BytesIO()
                self._gzip = gzip.GzipFile(fileobj=self._buffer, mode="wb", mtime=0)
            self._finish_part()
        if self._held is not None:
            self._put(table_part_key(self._table, self._snapshot_id, None, self._day), self._held)
            self._held = None
        return {"rows": self.rows, "keys": list(self.keys)}


def iter_lines(store: ObjectStore, keys: Iterable[str]) -> Iterator[bytes]:
    """The raw JSON lines of a table's parts, in order, streamed."""
    for key in keys:
        with gzip.GzipFile(fileobj=store.open(key), mode="rb") as stream:
            for line in io.BufferedReader(stream, buffer_size=1 << 20):
                if line.strip():
                    yield line if line.endswith(b"\n") else line + b"\n"


def iter_rows(store: ObjectStore, keys: Iterable[str]) -> Iterator[dict[str, Any]]:
    for line in iter_lines(store, keys):
        yield json.loads(line)
