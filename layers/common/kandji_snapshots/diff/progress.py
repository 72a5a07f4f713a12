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


class ChangesFile:
    """changes/dt=…/<snapshot_id>.json.gz: every event of a run, one JSON line each."""

    def __init__(self, store: ObjectStore, snapshot_id: str):
        self._store = store
        self.key = changes_key(snapshot_id)
        location = store.location
        self.uri = f"{location}{'' if location.endswith('/') else '/'}{self.key}"  # s3://bucket/changes/...

    def exists(self) -> bool:
        return any(key == self.key for key in self._store.list_keys(self.key))

    def write(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Pass `events` through while compressing them; stored once the iteration ends."""
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0) as stream:
            for event in events:
                stream.write(encode_event(event).encode() + b"\n")
                yield event
        self._store.put(self.key, buffer.getvalue(), content_type="application/x-ndjson", content_encoding="gzip")

    def read(self) -> Iterator[dict[str, Any]]:
        for line in iter_lines(self._store, [self.key]):
            yield json.loads(line)
