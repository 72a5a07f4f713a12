"""What a differ run leaves in the store so that a retry publishes nothing twice.

The changes file holds every event of a run, written before anything is published: a
retry reads it back rather than recompute. Progress markers under
`changes/_published/<snapshot_id>/` record which of those events are already published.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from kandji_snapshots.diff.events import encode_event
from kandji_snapshots.snapshots.layout import changes_key, published_marker_prefix
from kandji_snapshots.snapshots.storage import ObjectNotFound, ObjectStore
from kandji_snapshots.snapshots.table_io import iter_lines

logger = logging.getLogger(__name__)


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

    def __init__(self, store: ObjectStore, snapshot_id: str, previous_snapshot_id: str | None):
        self._store = store
        self._snapshot_id = snapshot_id
        self._prefix = published_marker_prefix(snapshot_id)
        self._previous = previous_snapshot_id
        self.key = f"{self._prefix}comparison.json"
        self._members: list[bytes] = []  # the parts' bytes, read (and checked) once
        self._document = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            document = json.loads(self._store.get(self.key))
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            # Made against another previous snapshot (it cannot be, with transition claims): not ours to resume.
            if document.get("previous_snapshot_id") != self._previous:
                return {}
            self._members = [self._checked_member(key) for key in document.get("parts", [])]
            after = document.get("after_device")
            if not (after is None or isinstance(after, str)) or int(document.get("events", -1)) != sum(
                    len(gzip.decompress(member).splitlines()) for member in self._members):
                raise ValueError("its device or its event count does not match its parts")
        except ObjectNotFound as missing:
            if missing.args[0] == self.key:
                return {}
            return self._discard(f"its part {missing.args[0]} does not exist")
        except (ValueError, TypeError, OSError, EOFError, gzip.BadGzipFile) as error:  # cut short, not JSON
            return self._discard(str(error) or type(error).__name__)
        return document

    def _checked_member(self, key: str) -> bytes:
        if not isinstance(key, str) or not key.startswith(f"{self._prefix}comparison-"):
            raise ValueError(f"it lists {key!r}, which is not one of its parts")
        member = self._store.get(key)
        for line in gzip.decompress(member).splitlines():
            json.loads(line)
        return member

    def _discard(self, why: str) -> dict[str, Any]:
        """A checkpoint that cannot be read is no reason to stop: its events were never published (they are
        published from the changes file, written once the comparison ends), so the comparison starts over."""
        logger.warning(f"the differ's checkpoint {self._store.location.rstrip('/')}/{self.key} cannot be read "
                       f"({why}): deleted, and the comparison of snapshot {self._snapshot_id} starts over. Nothing "
                       "was published from it; nothing needs doing unless this repeats (then check what else "
                       "writes under changes/_published/)", extra={"snapshot_id": self._snapshot_id,
                                                                  "checkpoint": self.key})
        self._members = []
        self._store.delete([key for key in self._store.list_keys(self._prefix)
                            if key == self.key or key.startswith(f"{self._prefix}comparison-")])
        return {}

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
        for member in self._members:
            for line in iter_lines_of(member):
                yield json.loads(line)

    def head(self) -> bytes:
        return b"".join(self._members)

    def save(self, paused: ComparisonPaused) -> dict[str, Any]:
        parts = self._parts()
        events = self.events_so_far + sum(1 for _ in iter_lines_of(paused.partial))
        if paused.after_device is not None and paused.after_device != self.after_device:
            part = f"{self._prefix}comparison-{len(parts):05d}.json.gz"
            self._store.put(part, paused.partial, content_type="application/x-ndjson", content_encoding="gzip")
            parts.append(part)
            self._members.append(paused.partial)
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
            self._document, self._members = {}, []


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
