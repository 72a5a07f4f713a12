"""What a differ run leaves in the store so that a retry publishes nothing twice.

The changes file holds every event of a run, written before anything is published: a
retry reads it back rather than recompute. Progress markers under
`changes/_published/<snapshot_id>/` record which of those events are already published.
Transition claims make each snapshot the `previous` of one diff only (overlapping runs).
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from kandji_snapshots.diff.events import encode_event
from kandji_snapshots.errors import SnapshotConflict
from kandji_snapshots.snapshots.layout import changes_key, published_marker_prefix, transition_key
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


@dataclass(frozen=True)
class Transition:
    previous_snapshot_id: str | None  # what this snapshot is diffed against
    superseded_by: str | None = None  # a newer snapshot already diffed against it: publish nothing


class TransitionClaims:
    """Each committed snapshot is the `previous` of exactly one diff: the first differ to claim it.

    Two collector runs that overlap commit A (10:00) and B (10:01) after snapshot 09:00. The
    differ of B diffs against A when A is committed by then; if it is not, B claims 09:00, covers
    A's changes too, and A's differ finds 09:00 taken by a newer snapshot and publishes nothing.
    Either way every change is published by one differ only.

    changes/_transitions/<previous>.json        {"snapshot_id": who diffs against it}, written if absent
    changes/_published/<snapshot>/previous.json  {"previous_snapshot_id": ...}, this snapshot's last choice:
                                                 a retry keeps it once events were computed against it, and
                                                 else releases its claim and chooses afresh
    """

    def __init__(self, store: ObjectStore, snapshot_id: str):
        self._store = store
        self._snapshot_id = snapshot_id
        self._choice_key = f"{published_marker_prefix(snapshot_id)}previous.json"

    def claim(self, latest_before: Callable[[], str | None], *, keep_choice: bool) -> Transition:
        """The previous snapshot to diff against, claimed; `latest_before` lists the committed ones.

        `keep_choice`: an earlier attempt computed events against its choice (they may be published):
        keep it. Otherwise choose afresh, releasing an earlier attempt's claim if the choice moved on.
        """
        choice = self._choice()
        previous = choice if keep_choice and not isinstance(choice, _Unset) else latest_before()
        while True:
            if previous != choice:
                if not isinstance(choice, _Unset):
                    self._release(choice)
                self._store.put(self._choice_key, json.dumps({"previous_snapshot_id": previous}).encode(),
                                content_type="application/json")
                choice = previous
            holder = self._holder(previous)
            if holder == self._snapshot_id:
                return Transition(previous)
            if holder > self._snapshot_id:
                return Transition(previous, superseded_by=holder)
            # An older snapshot, committed since, took `previous`: it sits between; diff against the latest.
            newer = latest_before()
            if newer is None or (previous is not None and newer <= previous):
                raise SnapshotConflict(
                    f"Snapshot {holder} was diffed against {previous or 'nothing (first snapshot)'}, but it is no "
                    f"longer committed, so snapshot {self._snapshot_id} has no consistent previous snapshot. "
                    f"Restore its manifest, or delete {transition_key(previous)} and invoke the differ again.")
            previous = newer

    def release(self) -> None:
        """Nothing was computed against this run's choice (it failed before): let the next attempt choose."""
        choice = self._choice()
        if not isinstance(choice, _Unset):
            self._release(choice)
        self._store.delete([self._choice_key])

    def _release(self, previous: str | None) -> None:
        key = transition_key(previous)
        try:
            holder = json.loads(self._store.get(key))["snapshot_id"]
        except ObjectNotFound:
            return
        if holder == self._snapshot_id:  # only ever our own claim
            self._store.delete([key])

    def _choice(self) -> str | None | _Unset:
        try:
            return json.loads(self._store.get(self._choice_key))["previous_snapshot_id"]
        except ObjectNotFound:
            return _UNSET

    def _holder(self, previous: str | None) -> str:
        key = transition_key(previous)
        body = json.dumps({"snapshot_id": self._snapshot_id, "previous_snapshot_id": previous}).encode()
        if self._store.create(key, body):
            return self._snapshot_id
        return str(json.loads(self._store.get(key))["snapshot_id"])


class _Unset:
    """No choice recorded yet (None is a choice: the first snapshot)."""


_UNSET = _Unset()
