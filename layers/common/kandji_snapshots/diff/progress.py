"""What a differ run leaves in the store so that a retry publishes nothing twice.

The changes file holds every event of a run, written before anything is published: a
retry reads it back rather than recompute. Progress markers under
`changes/_published/<snapshot_id>/` record which of those events are already published.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from kandji_snapshots.diff.events import encode_event
from kandji_snapshots.snapshots.layout import changes_key, published_marker_prefix
from kandji_snapshots.snapshots.table_io import iter_lines
from kandji_snapshots.snapshots.storage import ObjectNotFound, ObjectStore


@dataclass
class PublishProgress:
    published_events: int = 0  # events[:published_events] are published
    published_ids: list[str] = field(default_factory=list)  # and these after it (a batch that half failed)


class ProgressMarkers:
    """What earlier attempts for one snapshot already published.

    progress.json  {"published_events": n, "published_ids": [...]}, rewritten after every batch
    done.json      the summary, written once it is published: the run is complete
    """

    def __init__(self, store: ObjectStore, snapshot_id: str):
        self._store = store
        prefix = published_marker_prefix(snapshot_id)
        self.progress_key = f"{prefix}progress.json"
        self.done_key = f"{prefix}done.json"

    def done(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._store.get(self.done_key))
        except ObjectNotFound:
            return None

    def progress(self) -> PublishProgress:
        try:
            document = json.loads(self._store.get(self.progress_key))
        except ObjectNotFound:
            return PublishProgress()
        return PublishProgress(int(document["published_events"]), list(document.get("published_ids", [])))

    def save(self, progress: PublishProgress) -> None:
        self._store.put(self.progress_key, json.dumps(asdict(progress)).encode(), content_type="application/json")

    def mark_done(self, summary: dict[str, Any]) -> None:
        self._store.put(self.done_key, json.dumps(summary, indent=2).encode(), content_type="application/json")


class ComparisonPaused(Exception):
    """The comparison stopped at a device boundary: every device up to `after_device` is compared."""

    def __init__(self, after_device: bytes | None):
        super().__init__(after_device)
        self.after_device = after_device
        self.partial = b""  # the events found since the last checkpoint, one gzip member (set by ChangesFile)


class ComparisonCheckpoint:
    """How far an interrupted comparison got, so the next attempt goes on instead of starting over.

    comparison.json          {"previous_snapshot_id", "after_device", "events", "parts": [...]}
    comparison-NNNNN.json.gz the events each attempt found, one gzip member each: the changes file
                             starts with them, in order, byte for byte
    """

    @staticmethod
    def exists(store: ObjectStore, snapshot_id: str) -> bool:
        key = f"{published_marker_prefix(snapshot_id)}comparison.json"
        return any(found == key for found in store.list_keys(key))

    def __init__(self, store: ObjectStore, snapshot_id: str, previous_snapshot_id: str | None):
        self._store = store
        self._prefix = published_marker_prefix(snapshot_id)
        self._previous = previous_snapshot_id
        self.key = f"{self._prefix}comparison.json"
        self._document = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            document = json.loads(self._store.get(self.key))
        except ObjectNotFound:
            return {}
        # Made against another previous snapshot (it cannot be, with transition claims): not ours to resume.
        return document if document.get("previous_snapshot_id") == self._previous else {}

    @property
    def after_device(self) -> bytes | None:
        after = self._document.get("after_device")
        return None if after is None else after.encode("latin-1")  # the id's raw bytes, kept losslessly

    @property
    def events_so_far(self) -> int:
        return int(self._document.get("events", 0))

    def _parts(self) -> list[str]:
        return list(self._document.get("parts", []))

    def events(self) -> Iterator[dict[str, Any]]:
        for line in iter_lines(self._store, self._parts()):
            yield json.loads(line)

    def head(self) -> bytes:
        return b"".join(self._store.get(key) for key in self._parts())

    def save(self, paused: ComparisonPaused) -> dict[str, Any]:
        parts = self._parts()
        events = self.events_so_far + sum(1 for _ in iter_lines_of(paused.partial))
        if paused.after_device is not None and paused.after_device != self.after_device:
            part = f"{self._prefix}comparison-{len(parts):05d}.json.gz"
            self._store.put(part, paused.partial, content_type="application/x-ndjson", content_encoding="gzip")
            parts.append(part)
            after = paused.after_device.decode("latin-1")
        else:  # not one device further: nothing new to keep
            after, events = self._document.get("after_device"), self.events_so_far
        self._document = {"previous_snapshot_id": self._previous, "after_device": after, "events": events,
                          "parts": parts}
        self._store.put(self.key, json.dumps(self._document).encode(), content_type="application/json")
        return self._document

    def clear(self) -> None:
        if self._document:
            self._store.delete([*self._parts(), self.key])
            self._document = {}


def iter_lines_of(member: bytes) -> Iterator[bytes]:
    return iter(gzip.decompress(member).splitlines()) if member else iter(())


class ChangesFile:
    """changes/dt=…/<snapshot_id>.json.gz: every event of a run, one JSON line each."""

    def __init__(self, store: ObjectStore, snapshot_id: str):
        self._store = store
        self.key = changes_key(snapshot_id)
        location = store.location
        self.uri = f"{location}{'' if location.endswith('/') else '/'}{self.key}"  # s3://bucket/changes/...

    def exists(self) -> bool:
        return any(key == self.key for key in self._store.list_keys(self.key))

    def write(self, events: Iterable[dict[str, Any]], head: bytes = b"") -> Iterator[dict[str, Any]]:
        """Pass `events` through while compressing them; stored, after `head` (gzip members of events
        an earlier attempt found), once the iteration ends. A pause keeps what was found in the pause."""
        buffer = io.BytesIO()
        stream = gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0)
        try:
            for event in events:
                stream.write(encode_event(event).encode() + b"\n")
                yield event
        except ComparisonPaused as paused:
            stream.close()
            paused.partial = buffer.getvalue()
            raise
        stream.close()
        self._store.put(self.key, head + buffer.getvalue(), content_type="application/x-ndjson",
                        content_encoding="gzip")

    def read(self) -> Iterator[dict[str, Any]]:
        for line in iter_lines(self._store, [self.key]):
            yield json.loads(line)
