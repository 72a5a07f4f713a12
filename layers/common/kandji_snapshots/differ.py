"""The differ's domain: compare two committed snapshots, then publish what changed, once.

Comparing (`diff_snapshots`) is a streaming merge-join by device_id over the three
tables of both snapshots, one device's rows at a time. Rows are compared as raw
bytes after their per-snapshot prefix (`snapshot_id`, `fetched_at`); only rows
whose bytes differ are parsed. Check-in noise (change_rules.IGNORED_FIELDS) is
cut out of the raw bytes first when that is provably safe, so a fleet that only
checked in again costs no JSON parsing at all.

Running (`SnapshotDiffer.run`) writes every event to the changes file first, then
publishes them in batches, then a `snapshot_summary`. Progress markers under
`changes/_published/<snapshot_id>/` make a redelivered trigger publish nothing
twice and a retried run resume where the failed one stopped.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from . import schema
from .catalog import Manifest, load_manifest, previous_snapshot_id
from .change_events import (APP_INSTALLED, APP_REMOVED, APP_UPDATED, CHANGE_TYPE_RANK, DEVICE_ADDED,
                            DEVICE_CHANGED, DEVICE_REMOVED, SNAPSHOT_SUMMARY, EventTally, app_event,
                            app_identity, app_list, device_event, encode_event, summary_event)
from .change_rules import ChangeRules, highest
from .errors import DeadlineExceeded, KandjiSnapshotsError
from .layout import changes_key, manifest_key, published_marker_prefix
from .publisher import Publisher, PublishError, event_message, plan_batches
from .schema import Array, Scalar, Struct, Type
from .snapshot_io import iter_lines
from .storage import ObjectNotFound, ObjectStore

logger = logging.getLogger(__name__)

DEFAULT_MAX_EVENTS_PER_RUN = 500


class SnapshotFormatError(KandjiSnapshotsError):
    """A snapshot row does not start the way normalize.encode_row writes rows."""


class SnapshotNotCommitted(KandjiSnapshotsError):
    """The snapshot to diff has no manifest."""


class SnapshotIncomplete(KandjiSnapshotsError):
    """A manifest lists a part that is not in the store: the snapshot cannot be read."""


# --- raw rows ------------------------------------------------------------------

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


def _device_id_text(raw: bytes) -> str:
    return json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()


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


class DeviceRows:
    """One device's rows in one snapshot, still raw."""

    __slots__ = ("device_id", "device", "device_head", "details", "details_prefix", "apps", "apps_prefix",
                 "_parsed")

    def __init__(self, device_id: bytes, device: bytes, device_head: int, details: list[bytes],
                 details_prefix: bytes | None, apps: list[bytes], apps_prefix: bytes | None):
        self.device_id = device_id
        self.device = device
        self.device_head = device_head
        self.details = details
        self.details_prefix = details_prefix
        self.apps = apps
        self.apps_prefix = apps_prefix
        self._parsed: dict[str, Any] | None = None

    @property
    def device_row(self) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = json.loads(self.device)
        return self._parsed

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


def iter_device_rows(store: ObjectStore, manifest: Manifest) -> Iterator[DeviceRows]:
    """Every device of a snapshot with its details and apps rows, in device_id order, streamed."""
    details = _TableCursor(iter_lines(store, manifest.table_keys("device_details")), True)
    apps = _TableCursor(iter_lines(store, manifest.table_keys("device_apps")), True)
    for line in iter_lines(store, manifest.table_keys("devices")):
        device_id, head = row_head(line, False)
        detail_rows, details_prefix = details.take(device_id)
        app_rows, apps_prefix = apps.take(device_id)
        yield DeviceRows(device_id, line, head, detail_rows, details_prefix, app_rows, apps_prefix)
    if details.orphan_rows or apps.orphan_rows:
        logger.warning("rows of devices missing from the devices table were ignored",
                       extra={"snapshot_id": manifest.snapshot_id, "details_rows": details.orphan_rows,
                              "apps_rows": apps.orphan_rows})


# --- fields ----------------------------------------------------------------------

# Columns that describe the snapshot, not the device: never compared.
_PREFIX_COLUMNS = frozenset({"snapshot_id", "device_id", "fetched_at"})
_JSON_COLUMNS = {table: frozenset(name for name, kind in columns.items() if kind == schema.JSON)
                 for table, columns in schema.TABLES.items()}
# A details column whose name is also a devices column is reported as `details.<name>`.
_FIELD_NAMES = {
    "devices": {},
    "device_details": {name: f"details.{name}" for name in schema.DEVICE_DETAILS
                       if name in schema.DEVICES and name not in _PREFIX_COLUMNS},
}


def _flatten(value: Any, path: str, out: dict[str, Any], elements: dict[str, Any]) -> None:
    """Leaves by dotted path; arrays of objects keyed by each element's `name`, else its index.

    `elements` collects those array elements by path, so an element that appears or goes
    is reported as one change rather than one per leaf.
    """
    if value is None:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{path}.{key}", out, elements)
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        used: set[str] = set()
        for index, item in enumerate(value):
            name = item.get("name")
            key = str(name) if isinstance(name, (str, int)) and str(name) != "" and str(name) not in used \
                else str(index)
            used.add(key)
            elements[f"{path}.{key}"] = item
            _flatten(item, f"{path}.{key}", out, elements)
    elif value != [] and value != "":
        out[path] = value


def row_fields(table: str, row: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A devices or device_details row as ({dotted field: value}, {array element path: element}).

    JSON-text columns are parsed and flattened too; `extra` is kept whole.
    """
    fields: dict[str, Any] = {}
    elements: dict[str, Any] = {}
    if row is None:
        return fields, elements
    json_columns = _JSON_COLUMNS[table]
    names = _FIELD_NAMES[table]
    for column, value in row.items():
        if column in _PREFIX_COLUMNS or value is None:
            continue
        name = names.get(column, column)
        if column in json_columns:
            try:
                value = json.loads(value)
            except (TypeError, ValueError):
                pass  # not JSON after all: compare the text
            if column == "extra":  # compared as a whole
                fields[name] = value
                continue
        _flatten(value, name, fields, elements)
    return fields, elements


def _same(before: Any, after: Any) -> bool:
    return before == after and type(before) is type(after)


def field_changes(rules: ChangeRules, table: str, before: dict[str, Any] | None,
                  after: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The changes between two rows of a table, in column order, ignored fields left out."""
    old, old_elements = row_fields(table, before)
    new, new_elements = row_fields(table, after)
    # Array elements present on one side only (a profile installed, a volume gone): one change each.
    whole = sorted(old_elements.keys() ^ new_elements.keys())
    whole = [path for path in whole if not any(path.startswith(f"{outer}.") for outer in whole)]
    changes = []
    reported: set[str] = set()
    for name in dict.fromkeys([*old, *new]):
        element = next((path for path in whole if name.startswith(f"{path}.")), None) if whole else None
        if element is not None:
            if element not in reported and not rules.is_ignored(element):
                reported.add(element)
                changes.append(_change(rules, element, old_elements.get(element), new_elements.get(element)))
            continue
        was, now = old.get(name), new.get(name)
        if not _same(was, now) and not rules.is_ignored(name):
            changes.append(_change(rules, name, was, now))
    return changes


def _change(rules: ChangeRules, name: str, before: Any, after: Any) -> dict[str, Any]:
    severity, reason = rules.assess(name, before, after)
    change = {"field": name, "before": _scalar_or_text(before), "after": _scalar_or_text(after),
              "severity": severity}
    if reason:
        change["reason"] = reason
    return change


def _scalar_or_text(value: Any) -> Any:
    """Objects and lists (an `extra`, a whole profile) as JSON text: Athena reads before/after as strings."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return value


class VolatileValues:
    """Cuts the values of always-changing fields out of a raw row, so two rows compare without parsing.

    A key is cut only when every scalar field of the table with that key name is ignored:
    inside JSON-text columns every quote is escaped, so `"key":` only matches real keys.
    Values that are not plain strings or null are left in place: rows that differ there are parsed.
    """

    def __init__(self, keys: Iterable[str]):
        self.keys = tuple(sorted(keys))
        names = b"|".join(re.escape(key.encode()) for key in self.keys)
        # A key and its value when that is a string without escapes, or null. Other values stay,
        # so rows that differ in them are parsed and compared properly.
        self._values = re.compile(rb'"(?:' + names + rb')":(?:"[^"\\]*"|null)')

    @classmethod
    def for_table(cls, table: str, rules: ChangeRules) -> "VolatileValues | None":
        leaves: dict[str, list[str]] = {}
        for path, key in _scalar_leaves(schema.TABLES[table], _FIELD_NAMES.get(table, {})):
            leaves.setdefault(key, []).append(path)
        keys = [key for key, paths in leaves.items() if all(rules.is_ignored(path) for path in paths)]
        return cls(keys) if keys else None

    def strip(self, line: bytes, start: int) -> bytes:
        return self._values.sub(b"", line[start:])


def _scalar_leaves(columns: dict[str, Type], names: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(field path, key name) of every scalar in a table; array elements under sample keys."""
    def walk(kind: Type, path: str, key: str) -> Iterator[tuple[str, str]]:
        if isinstance(kind, Struct):
            for name, item in kind.fields.items():
                yield from walk(item, f"{path}.{name}", name)
        elif isinstance(kind, Array) and isinstance(kind.item, Struct):
            for sample in ("0", "Sample Volume"):  # an element is keyed by index or by name
                yield from walk(kind.item, f"{path}.{sample}", key)
        elif isinstance(kind, Scalar):
            yield path, key
    for column, kind in columns.items():
        if column not in _PREFIX_COLUMNS:
            yield from walk(kind, names.get(column, column), column)


# --- comparing snapshots --------------------------------------------------------

class SnapshotComparison:
    """The events between two snapshots, in order: device_id, change type, app identity."""

    def __init__(self, store: ObjectStore, previous: Manifest, current: Manifest, rules: ChangeRules):
        self._store = store
        self._previous = previous
        self._current = current
        self._rules = rules
        self._ids = {"snapshot_id": current.snapshot_id, "previous_snapshot_id": previous.snapshot_id}
        self._volatile = {table: VolatileValues.for_table(table, rules) for table in ("devices", "device_details")}
        # Devices a snapshot could not read (404 mid-run): unknown there, so neither added nor removed.
        self._unknown_before = {device_id.encode() for device_id in previous.skipped_device_ids}
        self._unknown_now = {device_id.encode() for device_id in current.skipped_device_ids}
        # Skipped by the previous snapshot and not listed by this one: the 404 was an unenrolment.
        self._skipped_before = {str(item["device_id"]).encode(): item
                                for item in previous.document.get("skipped_devices", [])}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        before_rows = iter_device_rows(self._store, self._previous)
        after_rows = iter_device_rows(self._store, self._current)
        before = next(before_rows, None)
        after = next(after_rows, None)
        gone = iter(sorted(self._unknown_before - self._unknown_now))
        skipped = next(gone, None)
        while before is not None or after is not None:
            position = min(rows.device_id for rows in (before, after) if rows is not None)
            while skipped is not None and skipped <= position:
                if after is None or after.device_id != skipped:  # listed again: it was never gone
                    yield self._skipped_device_removed(skipped)
                skipped = next(gone, None)
            if after is None or (before is not None and before.device_id < after.device_id):
                if before.device_id not in self._unknown_now:
                    yield self._whole_device(DEVICE_REMOVED, before)
                before = next(before_rows, None)
            elif before is None or after.device_id < before.device_id:
                if after.device_id not in self._unknown_before:
                    yield self._whole_device(DEVICE_ADDED, after)
                after = next(after_rows, None)
            else:
                yield from self._device_changes(before, after)
                before = next(before_rows, None)
                after = next(after_rows, None)
        while skipped is not None:
            yield self._skipped_device_removed(skipped)
            skipped = next(gone, None)

    def _skipped_device_removed(self, device_id: bytes) -> dict[str, Any]:
        """A device the previous snapshot listed but could not read (404), no longer listed now.

        Its rows were never written, so only what the manifest kept is known: apps are unknown (null).
        """
        item = self._skipped_before[device_id]
        device = {"device_id": item["device_id"], "device_name": item.get("device_name"),
                  "serial_number": item.get("serial_number"), "platform": item.get("platform")}
        return device_event(DEVICE_REMOVED, device=device, apps=None, **self._ids)

    def _whole_device(self, change_type: str, rows: DeviceRows) -> dict[str, Any]:
        apps = app_list(json.loads(line) for line in rows.apps)
        return device_event(change_type, device=rows.device_row, apps=apps, **self._ids)

    def _device_changes(self, before: DeviceRows, after: DeviceRows) -> Iterator[dict[str, Any]]:
        changes = self._row_changes("devices", before.device, before.device_head, after.device, after.device_head,
                                    lambda: (before.device_row, after.device_row))
        if (before.details or after.details) and not self._same_details(before, after):
            # Details never fetched (rolling refresh) are unknown, not empty: nothing to compare.
            if before.details_known() and after.details_known():
                changes += field_changes(self._rules, "device_details", *_first_rows(before, after))
        if changes:
            severity = highest(change["severity"] for change in changes)
            yield device_event(DEVICE_CHANGED, device=after.device_row, severity=severity, changes=changes,
                               **self._ids)
        if before.apps_known() and after.apps_known():
            yield from self._app_changes(before, after)

    def _same_details(self, before: DeviceRows, after: DeviceRows) -> bool:
        if len(before.details) != 1 or len(after.details) != 1:
            return False
        return self._same_row("device_details", before.details[0], before.details_head(),
                              after.details[0], after.details_head())

    def _row_changes(self, table: str, before: bytes, before_head: int, after: bytes, after_head: int,
                     parse: Callable[[], tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
        if self._same_row(table, before, before_head, after, after_head):
            return []
        return field_changes(self._rules, table, *parse())

    def _same_row(self, table: str, before: bytes, before_head: int, after: bytes, after_head: int) -> bool:
        """True when the rows cannot differ in a field that counts (False may still mean no change)."""
        if before[before_head:] == after[after_head:]:
            return True
        volatile = self._volatile[table]
        return volatile is not None and volatile.strip(before, before_head) == volatile.strip(after, after_head)

    def _app_changes(self, before: DeviceRows, after: DeviceRows) -> list[dict[str, Any]]:
        if not before.apps and not after.apps:
            return []
        old_bodies, new_bodies = before.app_bodies(), after.app_bodies()
        if old_bodies == new_bodies:
            return []
        # Parse only the rows that differ: an unchanged row is the same app at the same version.
        old_set, new_set = set(old_bodies), set(new_bodies)
        old = _apps_by_identity(line for line, body in zip(before.apps, old_bodies) if body not in new_set)
        new = _apps_by_identity(line for line, body in zip(after.apps, new_bodies) if body not in old_set)
        events = []
        for identity in old.keys() | new.keys():
            was, now = old.get(identity), new.get(identity)
            if was is not None and now is not None:
                if was.get("version") == now.get("version"):
                    continue  # same app, same version: other metadata moved
                change_type = APP_UPDATED
            else:
                change_type = APP_INSTALLED if now is not None else APP_REMOVED
            events.append((CHANGE_TYPE_RANK[change_type], identity,
                           app_event(change_type, device=after.device_row, before=was, after=now, **self._ids)))
        events.sort(key=lambda item: item[:2])
        return [event for _, _, event in events]


def _first_rows(before: DeviceRows, after: DeviceRows) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The details rows to compare (a device has one; should there be several, the first counts)."""
    return (json.loads(before.details[0]) if before.details else None,
            json.loads(after.details[0]) if after.details else None)


def _apps_by_identity(lines: Iterable[bytes]) -> dict[tuple[str, str, str], dict[str, Any]]:
    apps: dict[tuple[str, str, str], dict[str, Any]] = {}
    for line in lines:
        app = json.loads(line)
        apps.setdefault(app_identity(app), app)  # rows are sorted, so duplicates keep the lowest version
    return apps


def diff_snapshots(store: ObjectStore, previous: Manifest, current: Manifest,
                   rules: ChangeRules | None = None) -> Iterator[dict[str, Any]]:
    return iter(SnapshotComparison(store, previous, current, rules or ChangeRules()))


# --- the run: changes file, publishing, progress markers ------------------------

@dataclass(frozen=True)
class DifferSettings:
    max_events_per_run: int = DEFAULT_MAX_EVENTS_PER_RUN
    ignore_fields: tuple[str, ...] = ()  # added to change_rules.DEFAULT_IGNORED_FIELDS
    time_margin_seconds: float = 10.0  # publish no batch with less time left than this


@dataclass
class DifferResult:
    snapshot_id: str
    previous_snapshot_id: str | None
    first_snapshot: bool
    device_count: int
    event_count: int
    counts_by_change_type: dict[str, int]
    counts_by_severity: dict[str, int]
    highest_severity: str
    suppressed: bool
    changes_uri: str
    published_events: int = 0  # by this invocation (a retry counts only what it added)
    published_messages: int = 0  # events and summary, by this invocation
    already_done: bool = False
    duration_seconds: float = 0.0

    @classmethod
    def from_summary(cls, summary: dict[str, Any], **extra: Any) -> "DifferResult":
        return cls(snapshot_id=summary["snapshot_id"], previous_snapshot_id=summary["previous_snapshot_id"],
                   first_snapshot=summary["first_snapshot"], device_count=summary["device_count"],
                   event_count=summary["event_count"], counts_by_change_type=summary["counts"],
                   counts_by_severity=summary["severity_counts"], highest_severity=summary["severity"],
                   suppressed=summary["suppressed"], changes_uri=summary["changes_uri"], **extra)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Progress:
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

    def progress(self) -> _Progress:
        try:
            document = json.loads(self._store.get(self.progress_key))
        except ObjectNotFound:
            return _Progress()
        return _Progress(int(document["published_events"]), list(document.get("published_ids", [])))

    def save(self, progress: _Progress) -> None:
        self._store.put(self.progress_key, json.dumps(asdict(progress)).encode(), content_type="application/json")

    def mark_done(self, summary: dict[str, Any]) -> None:
        self._store.put(self.done_key, json.dumps(summary, indent=2).encode(), content_type="application/json")


class _ChangesFile:
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


class SnapshotDiffer:
    def __init__(self, store: ObjectStore, publisher: Publisher, *, settings: DifferSettings = DifferSettings(),
                 clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._rules = ChangeRules(settings.ignore_fields)
        self._clock = clock

    def run(self, snapshot_id: str, *, time_left: Callable[[], float] | None = None) -> DifferResult:
        """Diff `snapshot_id` against the snapshot before it and publish, once.

        `time_left` (seconds, e.g. from the Lambda context) stops the run cleanly between two
        batches rather than let the Lambda be killed in the middle of one.
        """
        started = self._clock()
        current = self._load_committed(snapshot_id)
        markers = ProgressMarkers(self._store, snapshot_id)
        done = markers.done()
        if done is not None:
            logger.info("snapshot already diffed and published: nothing to do", extra={"snapshot_id": snapshot_id})
            return DifferResult.from_summary(done, already_done=True,
                                             duration_seconds=round(self._clock() - started, 3))
        previous_id = previous_snapshot_id(self._store, snapshot_id)
        changes_file = _ChangesFile(self._store, snapshot_id)
        tally = EventTally()
        kept: list[dict[str, Any]] | None = []  # the events to publish; None once over the limit
        try:
            for event in self._events(changes_file, previous_id, current):
                tally.add(event)
                if kept is not None:
                    kept.append(event)
                    if len(kept) > self._settings.max_events_per_run:
                        kept = None
        except ObjectNotFound as missing:
            raise self._incomplete(str(missing.args[0]), snapshot_id) from None
        suppressed = kept is None
        if suppressed:
            logger.warning("too many changes to publish one by one: publishing the summary only",
                           extra={"snapshot_id": snapshot_id, "events": tally.total,
                                  "max_events_per_run": self._settings.max_events_per_run})
        published_now = self._publish_events(kept or [], markers, changes_file.uri, snapshot_id, time_left)
        summary = summary_event(snapshot_id=snapshot_id, previous_snapshot_id=previous_id, tally=tally,
                                device_count=int(current.document["device_count"]), changes_uri=changes_file.uri,
                                published_events=len(kept or []), suppressed=suppressed,
                                max_events_per_run=self._settings.max_events_per_run)
        summary_attributes = {"change_type": SNAPSHOT_SUMMARY, "severity": summary["severity"], "platform": "all"}
        self._check_time(time_left, snapshot_id, len(kept or []), len(kept or []), markers)
        try:
            self._publisher.publish_batch([event_message(summary, changes_file.uri, attributes=summary_attributes)])
        except PublishError as error:
            raise _resumable(error, snapshot_id, len(kept or []), len(kept or []), markers) from error
        markers.mark_done(summary)
        result = DifferResult.from_summary(summary, published_events=published_now,
                                           published_messages=published_now + 1,
                                           duration_seconds=round(self._clock() - started, 3))
        logger.info("snapshot diffed", extra=result.as_dict())
        return result

    def _incomplete(self, key: str, snapshot_id: str) -> SnapshotIncomplete:
        owner = key.rsplit("/", 1)[-1][:16]  # parts are named <snapshot_id>[-NNNNN].json.gz
        location = self._store.location.rstrip("/")
        return SnapshotIncomplete(
            f"Snapshot {snapshot_id} cannot be diffed: {location}/{key} is listed in the manifest of snapshot "
            f"{owner} but does not exist (deleted by hand or by a lifecycle rule?). Nothing was published. "
            f"Restore the object (the bucket keeps noncurrent versions), or delete "
            f"{location}/{manifest_key(owner)} so that snapshot no longer counts, then invoke the differ "
            f"again for {snapshot_id}.")

    def _check_time(self, time_left: Callable[[], float] | None, snapshot_id: str, published: int, total: int,
                    markers: ProgressMarkers) -> None:
        if time_left is None or time_left() >= self._settings.time_margin_seconds:
            return
        raise DeadlineExceeded(
            f"The differ stopped before the Lambda's time ran out: {published} of {total} change events of "
            f"snapshot {snapshot_id} are published and recorded in {self._store.location.rstrip('/')}/"
            f"{markers.progress_key}. Nothing was published twice; the Lambda's retry (or invoking the differ "
            "again with the same manifest event) publishes only the rest. If this repeats, raise the differ's "
            "timeout.")

    def _load_committed(self, snapshot_id: str) -> Manifest:
        try:
            return load_manifest(self._store, snapshot_id)
        except ObjectNotFound:
            raise SnapshotNotCommitted(
                f"{self._store.location}/{manifest_key(snapshot_id)} does not exist: snapshot {snapshot_id} "
                "was never committed (or its manifest was deleted), so there is nothing to diff.") from None

    def _events(self, changes_file: _ChangesFile, previous_id: str | None,
                current: Manifest) -> Iterator[dict[str, Any]]:
        """This run's events: from the changes file when an earlier attempt wrote it, else computed and written."""
        if changes_file.exists():
            # What an earlier attempt may already have published: reuse it, never recompute differently.
            logger.info("resuming from the changes file", extra={"changes_uri": changes_file.uri})
            return changes_file.read()
        if previous_id is None:
            logger.info("first snapshot: nothing to compare with", extra={"snapshot_id": current.snapshot_id})
            return changes_file.write(())
        previous = load_manifest(self._store, previous_id)
        return changes_file.write(SnapshotComparison(self._store, previous, current, self._rules))

    def _publish_events(self, events: list[dict[str, Any]], markers: ProgressMarkers, changes_uri: str,
                        snapshot_id: str, time_left: Callable[[], float] | None = None) -> int:
        """Publish what earlier attempts did not, batch by batch, recording progress after each batch."""
        progress = markers.progress()
        already = set(progress.published_ids)
        pending = [(index, event) for index, event in enumerate(events)
                   if index >= progress.published_events and event["event_id"] not in already]
        if len(pending) < len(events):
            logger.info("resuming publishing", extra={"already_published": len(events) - len(pending),
                                                      "to_publish": len(pending)})
        index_of = {event["event_id"]: index for index, event in pending}
        published_now = 0
        for batch in plan_batches(event_message(event, changes_uri) for _, event in pending):
            done_before = len(events) - len(pending) + published_now
            self._check_time(time_left, snapshot_id, done_before, len(events), markers)
            try:
                self._publisher.publish_batch(batch)
            except PublishError as error:
                progress.published_ids = sorted(already | set(error.published_ids))
                markers.save(progress)
                raise _resumable(error, snapshot_id, done_before + len(error.published_ids), len(events),
                                 markers) from error
            published_now += len(batch)
            progress.published_events = index_of[batch[-1].id] + 1
            markers.save(progress)
        return published_now


def _resumable(error: PublishError, snapshot_id: str, published: int, total: int,
               markers: ProgressMarkers) -> PublishError:
    """The publisher's error, plus what is already published and what to do about the rest."""
    return PublishError(
        f"{error} Snapshot {snapshot_id}: {published} of {total} change events are published and recorded in "
        f"{markers.progress_key}; the Lambda's retry (or invoking the differ again with the same manifest event) "
        "publishes only the rest. If it keeps failing, check that the topic exists and that the differ may "
        "publish to it (sns:Publish, and kms:GenerateDataKey and kms:Decrypt on the topic's key).",
        published_ids=error.published_ids, failed=error.failed)
