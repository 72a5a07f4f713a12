"""The differ's domain: compare two committed snapshots, then publish what changed, once.

Comparing (`diff_snapshots`) is a streaming merge-join by device_id over the three
tables of both snapshots, one device's rows at a time. Rows are compared as raw
bytes after their per-snapshot prefix (`snapshot_id`, `fetched_at`); only rows
whose bytes differ are parsed. Check-in noise (rules.DEFAULT_IGNORED_FIELDS) is
cut out of the raw bytes first when that is provably safe, so a fleet that only
checked in again costs no JSON parsing at all. Before that, when both snapshots carry
fingerprints cut as this comparison cuts (diff/fingerprints.py, written by the collector), only the
devices whose fingerprints differ, or that one snapshot lacks, are read at all
(diff/changed_devices.py); the events are the same either way (tests/test_fingerprint_equivalence.py).

Running (`SnapshotDiffer.run`) writes every event to the changes file first, then
publishes them in batches, then a `snapshot_summary`. Progress markers under
`changes/_published/<snapshot_id>/` make a redelivered trigger publish nothing
twice and a retried run resume where the failed one stopped.

The parts live next door: snapshots.device_rows (a snapshot read one device at a time, rows raw),
device_pairs (the two snapshots' devices side by side: merge-join, checkpoint, deadline),
unread_devices (the skip rules for devices a snapshot could not read), field_changes (fields of
a row, what changed, the raw-bytes noise cut), progress (the changes file, the checkpoint and
the progress markers), transitions (which snapshot each diff compares against, claimed once) and
already_published (what a diff that takes another's place must not send again).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from kandji_snapshots.diff.already_published import AlreadyPublished
from kandji_snapshots.diff.changed_devices import changed_device_pairs, with_fallback
from kandji_snapshots.diff.device_pairs import DevicePair, after_checkpoint, merge_by_device, pause_at_deadline
from kandji_snapshots.diff.events import (
    APP_INSTALLED,
    APP_REMOVED,
    APP_UPDATED,
    CHANGE_TYPE_RANK,
    DEVICE_ADDED,
    DEVICE_APPS_FIRST_READ,
    DEVICE_CHANGED,
    DEVICE_REMOVED,
    SNAPSHOT_SUMMARY,
    EventTally,
    FieldTally,
    app_event,
    app_identity,
    app_list,
    device_event,
    summary_event,
)
from kandji_snapshots.diff.field_changes import VolatileValues, field_changes, without_inventory_noise
from kandji_snapshots.diff.messages import MessageContext
from kandji_snapshots.diff.posture_changes import PostureComparison
from kandji_snapshots.diff.progress import ChangesFile, ComparisonCheckpoint, ComparisonPaused, ProgressMarkers
from kandji_snapshots.diff.publisher import Publisher, PublishError, event_message, plan_batches
from kandji_snapshots.diff.rules import HIGH, IGNORE_FIELDS_ENV, INFO, ChangeRules, highest, repeats_device_list
from kandji_snapshots.diff.tenant_changes import TenantChanges
from kandji_snapshots.diff.transitions import Transition, TransitionClaims
from kandji_snapshots.diff.unread_devices import UnreadDevices
from kandji_snapshots.errors import DeadlineExceeded, KandjiSnapshotsError
from kandji_snapshots.snapshots.catalog import Manifest, load_manifest, previous_readable_snapshot_id
from kandji_snapshots.snapshots.committed import record_commit_or_log
from kandji_snapshots.snapshots.device_rows import DeviceRows, SnapshotFormatError, iter_device_rows, row_head
from kandji_snapshots.snapshots.layout import manifest_key
from kandji_snapshots.snapshots.storage import ObjectNotFound, ObjectStore
from kandji_snapshots.snapshots.timeutil import Clock, SystemClock

__all__ = [
    "DEFAULT_MAX_EVENTS_PER_RUN", "DifferResult", "DifferSettings", "SnapshotComparison", "SnapshotDiffer",
    "SnapshotFormatError", "SnapshotIncomplete", "SnapshotNotCommitted", "diff_snapshots",
    # the building blocks, for the tests that check the raw-row shortcuts
    "VolatileValues", "field_changes", "row_head",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_EVENTS_PER_RUN = 500


class SnapshotNotCommitted(KandjiSnapshotsError):
    """The snapshot to diff has no manifest."""


class SnapshotIncomplete(KandjiSnapshotsError):
    """A manifest lists a part that is not in the store: the snapshot cannot be read."""


# --- comparing snapshots --------------------------------------------------------

class SnapshotComparison:
    """The events between two snapshots, in order: device_id, change type, app identity."""

    def __init__(self, store: ObjectStore, previous: Manifest, current: Manifest, rules: ChangeRules, *,
                 resume_after: bytes | None = None, should_stop: Callable[[], bool] | None = None,
                 use_fingerprints: bool = True):
        # resume_after: devices up to this id were compared by an earlier attempt (checkpoint), skip them.
        # should_stop: asked every few devices; True raises ComparisonPaused at a device boundary.
        self._resume_after = resume_after
        self._use_fingerprints = use_fingerprints  # off: every device compared (benchmarks, equivalence tests)
        self._should_stop = should_stop
        self._store = store
        self._previous = previous
        self._current = current
        self._rules = rules
        self._ids = {"snapshot_id": current.snapshot_id, "previous_snapshot_id": previous.snapshot_id}
        self._volatile = {table: VolatileValues.for_table(table, rules) for table in ("devices", "device_details")}
        self._posture = PostureComparison(rules)  # device_posture + FileVault as one fact
        self._unread = UnreadDevices(previous, current)

    def _pairs(self) -> Iterator[DevicePair]:
        """Both snapshots' devices side by side, past the checkpoint, pausing when the time runs short."""
        # Devices whose fingerprints are all equal are left out unread (diff/changed_devices.py), when
        # both snapshots have fingerprints cut as this comparison cuts; else every device is paired.
        def every_device() -> Iterator[DevicePair]:
            return merge_by_device(iter_device_rows(self._store, self._previous),
                                   iter_device_rows(self._store, self._current))
        fingerprinted = (changed_device_pairs(self._store, self._previous, self._current, self._rules)
                         if self._use_fingerprints else None)
        pairs = every_device() if fingerprinted is None else with_fallback(
            fingerprinted, every_device, self._resume_after, self._current.snapshot_id)
        pairs = after_checkpoint(pairs, self._resume_after)
        if self._should_stop is not None:
            pairs = pause_at_deadline(pairs, self._should_stop, self._resume_after)
        return pairs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        unlisted = deque(self._unread.unlisted_since(self._resume_after))
        for pair in self._pairs():
            while unlisted and unlisted[0] <= pair.device_id:
                device_id = unlisted.popleft()
                if pair.after is None or device_id != pair.device_id:  # listed again: it was never gone
                    yield self._unlisted_device_removed(device_id)
            yield from self._pair_events(pair)
        for device_id in unlisted:
            yield self._unlisted_device_removed(device_id)

    def _pair_events(self, pair: DevicePair) -> Iterator[dict[str, Any]]:
        if pair.after is None:
            if self._unread.removal_counts(pair.device_id):
                yield self._whole_device(DEVICE_REMOVED, pair.before)
        elif pair.before is None:
            if self._unread.addition_counts(pair.device_id):
                yield self._whole_device(DEVICE_ADDED, pair.after)
        else:
            yield from self._device_changes(pair.before, pair.after)

    def _unlisted_device_removed(self, device_id: bytes) -> dict[str, Any]:
        """A device the previous snapshot listed but could not read (404), no longer listed now.

        Its rows were never written, so only what the manifest kept is known: apps are unknown (null).
        """
        return device_event(DEVICE_REMOVED, device=self._unread.last_known(device_id), apps=None, **self._ids)

    def _whole_device(self, change_type: str, rows: DeviceRows) -> dict[str, Any]:
        return device_event(change_type, device=rows.device_row, apps=_known_apps(rows), **self._ids)

    def _device_changes(self, before: DeviceRows, after: DeviceRows) -> Iterator[dict[str, Any]]:
        changes = self._row_changes("devices", before.device, before.device_head, after.device, after.device_head,
                                    lambda: (before.device_row, after.device_row))
        if (before.details or after.details) and not self._same_details(before, after):
            # Details never fetched (rolling refresh) are unknown, not empty: nothing to compare.
            if before.details_known() and after.details_known():
                changes += field_changes(self._rules, "device_details", *_first_rows(before, after))
        changes = self._posture.changes(before, after, changes)
        # Details and Prism fields that only catch up with the device list: the list reports it, once.
        changes = [change for change in changes
                   if not repeats_device_list(change["field"], change["after"], after.device_row)]
        if changes:
            severity = highest(change["severity"] for change in changes)
            yield device_event(DEVICE_CHANGED, device=after.device_row, severity=severity, changes=changes,
                               **self._ids)
        if before.apps_known() and after.apps_known():
            yield from self._app_changes(before, after)
        elif after.apps_known():  # announced with `apps: null`; now read: say what they are, once
            yield device_event(DEVICE_APPS_FIRST_READ, device=after.device_row, apps=_known_apps(after), **self._ids)

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
        if old_bodies != new_bodies:
            # Kandji renumbers app rows and restamps their dates at every inventory: cut those before
            # comparing, so an unchanged app is not parsed (app events look at identity and version only).
            old_bodies = [without_inventory_noise(body) for body in old_bodies]
            new_bodies = [without_inventory_noise(body) for body in new_bodies]
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


def _known_apps(rows: DeviceRows) -> list[dict[str, Any]] | None:
    """The device's apps, or None when they were never read (unknown, not "no apps")."""
    return app_list(json.loads(line) for line in rows.apps) if rows.apps_known() else None


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
                   rules: ChangeRules | None = None, *, use_fingerprints: bool = True) -> Iterator[dict[str, Any]]:
    return iter(SnapshotComparison(store, previous, current, rules or ChangeRules(),
                                   use_fingerprints=use_fingerprints))


# --- the run: changes file, publishing, progress markers ------------------------

@dataclass(frozen=True)
class DifferSettings:
    max_events_per_run: int = DEFAULT_MAX_EVENTS_PER_RUN
    ignore_fields: tuple[str, ...] = ()  # added to rules.DEFAULT_IGNORED_FIELDS
    time_margin_seconds: float = 10.0  # publish no batch with less time left than this
    message_context: MessageContext = MessageContext()  # where e-mails and chat point readers (Athena)
    # Stop comparing with less time left than this: enough to save the checkpoint (the events so far).
    compare_margin_seconds: float = 30.0
    tenant_severity: dict[str, str] | None = None  # tenant_changes.severity_table (None: its defaults)
    # Skip the devices whose fingerprints are equal (diff/changed_devices.py); off compares every device.
    use_fingerprints: bool = True


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
    superseded_by: str | None = None  # a newer snapshot's diff covers this one's changes: nothing published
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


class PublishSelection:
    """Which of a run's events are published one by one: all of them up to `limit`; past it, a flood,
    only the high-severity ones (up to `limit` too, else none): the summary counts the rest."""

    def __init__(self, limit: int):
        self._limit = limit
        self._all: list[dict[str, Any]] = []
        self._high: list[dict[str, Any]] = []
        self.over_limit = False  # more events than `limit`: the high-severity ones only
        self._high_over_limit = False  # more high-severity events than `limit`: none one by one

    def add(self, event: dict[str, Any]) -> None:
        if not self.over_limit:
            self._all.append(event)
            if len(self._all) > self._limit:
                self.over_limit, self._all = True, []
        if not self._high_over_limit and event["severity"] == HIGH:
            self._high.append(event)
            if len(self._high) > self._limit:
                self._high_over_limit, self._high = True, []

    def events(self) -> list[dict[str, Any]]:
        if not self.over_limit:
            return self._all
        return [] if self._high_over_limit else self._high

    def high_count_if_kept(self) -> int | None:
        """The high-severity events kept (logged with a flood); None when they were too many to keep."""
        return None if self._high_over_limit else len(self._high)


class SnapshotDiffer:
    def __init__(self, store: ObjectStore, publisher: Publisher, *, settings: DifferSettings = DifferSettings(),
                 clock: Clock = SystemClock):
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
        started = self._clock.monotonic()
        current = self._load_committed(snapshot_id)
        # Athena's row of the commit, when the collector died between its manifest and the row (write-once).
        record_commit_or_log(self._store, current, writer="differ")
        markers = ProgressMarkers(self._store, snapshot_id)
        done = markers.done()
        if done is not None:
            logger.info("snapshot already diffed and published: nothing to do", extra={"snapshot_id": snapshot_id})
            return DifferResult.from_summary(done, already_done=True,
                                             duration_seconds=round(self._clock.monotonic() - started, 3))
        # The latest snapshot committed before this one, claimed so that overlapping runs never
        # publish one change twice (transitions.TransitionClaims).
        changes_file = ChangesFile(self._store, snapshot_id)
        claims = TransitionClaims(self._store, snapshot_id, now=self._clock.now)
        transition = claims.claim(lambda: previous_readable_snapshot_id(self._store, snapshot_id))
        previous_id = transition.previous_snapshot_id
        if transition.superseded_by is not None:
            return self._superseded(current, previous_id, transition.superseded_by, started)
        checkpoint = ComparisonCheckpoint(self._store, snapshot_id, previous_id)
        tally, fields = EventTally(), FieldTally()
        limit = self._settings.max_events_per_run
        selection = PublishSelection(limit)
        try:
            for event in self._events(changes_file, checkpoint, transition, current, time_left):
                tally.add(event)
                fields.add(event)
                selection.add(event)
        except ObjectNotFound as missing:
            # The claim is kept: a snapshot that found it taken counts on this one to cover its changes.
            raise self._incomplete(str(missing.args[0]), snapshot_id) from None
        except ComparisonPaused as paused:
            raise self._paused(paused, checkpoint, snapshot_id, previous_id) from None
        checkpoint.clear()  # the changes file now holds its events
        suppressed = selection.over_limit
        noisy_field = fields.dominant(tally.total, IGNORE_FIELDS_ENV) if suppressed else None
        kept = selection.events()
        if suppressed:
            # A flood (often one field moving on every device) must not bury a FileVault turned off.
            logger.warning("too many changes to publish one by one: publishing the high-severity events and the "
                           "summary only", extra={"snapshot_id": snapshot_id, "events": tally.total,
                                                   "high_severity_events": selection.high_count_if_kept(),
                                                   "max_events_per_run": limit, "noisy_field": noisy_field})
            if noisy_field:
                logger.warning(f"field {noisy_field['field']} changed on {noisy_field['devices']} of "
                               f"{noisy_field['devices_changed']} changed devices; if it means nothing to you, "
                               f"set {noisy_field['silence_with']} on the differ",
                               extra={"snapshot_id": snapshot_id})
        published_now = self._publish_events(kept, markers, changes_file.uri, snapshot_id, time_left)
        summary = summary_event(snapshot_id=snapshot_id, previous_snapshot_id=previous_id, tally=tally,
                                device_count=int(current.document["device_count"]), changes_uri=changes_file.uri,
                                published_events=len(kept), suppressed=suppressed, max_events_per_run=limit,
                                noisy_field=noisy_field)
        summary_attributes = {"change_type": SNAPSHOT_SUMMARY, "severity": summary["severity"], "platform": "all"}
        self._check_time(time_left, snapshot_id, len(kept), len(kept), markers)
        try:
            self._publisher.publish_batch([event_message(summary, changes_file.uri, attributes=summary_attributes,
                                                          context=self._settings.message_context)])
        except PublishError as error:
            raise _resumable(error, snapshot_id, len(kept), len(kept), markers) from error
        markers.mark_done(summary)
        claims.complete()
        result = DifferResult.from_summary(summary, published_events=published_now,
                                           published_messages=published_now + 1,
                                           duration_seconds=round(self._clock.monotonic() - started, 3))
        logger.info("snapshot diffed", extra=result.as_dict())
        return result

    def _superseded(self, current: Manifest, previous_id: str | None, newer: str, started: float) -> DifferResult:
        logger.warning(f"snapshot {newer} was already diffed against {previous_id or 'nothing (first snapshot)'}, "
                       f"so its events include this snapshot's changes: nothing published for "
                       f"{current.snapshot_id} (two collector runs overlapped)",
                       extra={"snapshot_id": current.snapshot_id, "superseded_by": newer})
        return DifferResult(snapshot_id=current.snapshot_id, previous_snapshot_id=previous_id,
                            first_snapshot=previous_id is None, device_count=int(current.document["device_count"]),
                            event_count=0, counts_by_change_type={}, counts_by_severity={}, highest_severity=INFO,
                            suppressed=False, changes_uri="", superseded_by=newer,
                            duration_seconds=round(self._clock.monotonic() - started, 3))

    def _incomplete(self, key: str, snapshot_id: str) -> SnapshotIncomplete:
        owner = key.rsplit("/", 1)[-1][:16]  # parts are named <snapshot_id>[-NNNNN].json.gz
        location = self._store.location.rstrip("/")
        then = ("and leave it: the next snapshot's diff compares with the one before it" if owner == snapshot_id
                else "then invoke the differ again: it compares with the snapshot before, and what was already "
                     "published is not sent again")
        return SnapshotIncomplete(
            f"Snapshot {snapshot_id} cannot be diffed: {location}/{key} is listed in the manifest of snapshot "
            f"{owner} but does not exist (deleted by hand or by a lifecycle rule?). Nothing was published. "
            f"Restore the object (the bucket keeps noncurrent versions) and invoke the differ again for "
            f"{snapshot_id}. If it cannot be restored, delete {location}/{manifest_key(owner)} so that snapshot "
            f"no longer counts, {then}. Delete nothing under changes/.")

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

    def _events(self, changes_file: ChangesFile, checkpoint: ComparisonCheckpoint, transition: Transition,
                current: Manifest, time_left: Callable[[], float] | None) -> Iterator[dict[str, Any]]:
        """This run's events: from the changes file when an earlier attempt wrote it, else computed and written.

        A comparison that runs short of time stops at a device boundary (ComparisonPaused); the
        events found so far are saved as a checkpoint, and the next attempt goes on from there.
        """
        if changes_file.exists():
            # What an earlier attempt may already have published: reuse it, never recompute differently.
            logger.info("resuming from the changes file", extra={"changes_uri": changes_file.uri})
            return changes_file.read()
        previous_id = transition.previous_snapshot_id
        if previous_id is None:
            logger.info("first snapshot: nothing to compare with", extra={"snapshot_id": current.snapshot_id})
            return changes_file.write(())
        previous = load_manifest(self._store, previous_id)
        if checkpoint.after_device is not None:
            logger.info("resuming the comparison", extra={"snapshot_id": current.snapshot_id,
                                                          "events_so_far": checkpoint.events_so_far})
        margin = self._settings.compare_margin_seconds
        comparison = SnapshotComparison(self._store, previous, current, self._rules,
                                        resume_after=checkpoint.after_device,
                                        should_stop=None if time_left is None else lambda: time_left() < margin,
                                        use_fingerprints=self._settings.use_fingerprints)

        # The tenant's own events follow the devices' (diff/tenant_changes.py).
        tenant = TenantChanges(self._store, previous, current, self._settings.tenant_severity)
        found: Iterable[dict[str, Any]] = itertools.chain(comparison, tenant)
        if transition.replaces is not None:  # a snapshot no longer committed diffed against `previous` first
            found = AlreadyPublished.by(self._store, transition.replaces).remove_from(found)

        def events() -> Iterator[dict[str, Any]]:
            yield from checkpoint.events()
            yield from changes_file.write(found, head=checkpoint.head())
        return events()

    def _paused(self, paused: ComparisonPaused, checkpoint: ComparisonCheckpoint, snapshot_id: str,
                previous_id: str | None) -> DeadlineExceeded:
        saved = checkpoint.save(paused)
        return DeadlineExceeded(
            f"The differ stopped comparing snapshot {snapshot_id} with {previous_id} before the Lambda's time ran "
            f"out: the devices up to {saved['after_device']!r} are compared and their {saved['events']} change "
            f"events saved under {self._store.location.rstrip('/')}/{checkpoint.key}. Nothing was published yet; "
            "the Lambda's retry (or invoking the differ again with the same manifest event) goes on from there. "
            "If the retries run out first, invoke it again; if this happens every run, raise the differ's timeout.")

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
        for batch in plan_batches(event_message(event, changes_uri, context=self._settings.message_context)
                                  for _, event in pending):
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
