"""The daily digest: one message summarising a day's change events, for teams that want no mail per change.

It reads the changes files of one UTC day (`changes/dt=YYYY-MM-DD/<snapshot_id>.json.gz`,
written by the differ), counts the events by change type, severity and platform, lists the
high-severity ones, and publishes one message: the JSON digest for queues and functions, a
plain-text e-mail, and a subject, with the attribute `change_type` = `daily_digest` so that
subscription filter policies can select (or leave out) the digest.

A day's digest is sent once: a marker (`changes/_digests/<day>.json`, claimed with a conditional
write before publishing) makes a scheduler retry or a second invocation for the same day publish
nothing. `force` sends it again on purpose. A day that is not over yet is never marked: its
digest is incomplete, and the scheduled one is still to come.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from kandji_snapshots.diff.events import CHANGE_TYPES, SCHEMA_VERSION
from kandji_snapshots.diff.messages import (
    HIGH_SEVERITY_QUERY,
    MessageContext,
    ascii_text,
    cut,
    device_label,
    headline,
    short_user,
    subject,
)
from kandji_snapshots.diff.publisher import MAX_BATCH_BYTES, Message, Publisher
from kandji_snapshots.diff.rules import HIGH, SEVERITIES, highest
from kandji_snapshots.diff.tenant_changes import TENANT_CHANGE_TYPES
from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.snapshots.claims import Claim, ClaimOnce, ClaimStates
from kandji_snapshots.snapshots.layout import CHANGES_PREFIX, digest_marker_key
from kandji_snapshots.snapshots.storage import ObjectStore
from kandji_snapshots.snapshots.table_io import iter_lines

logger = logging.getLogger(__name__)

DAILY_DIGEST = "daily_digest"
MAX_LISTED_HIGH = 100  # high-severity events listed one by one; the rest are counted
LISTED_VALUE_MAX_CHARS = 120  # a name, serial or id in a listed event: one line, this long at most
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CHANGES_FILE = re.compile(r"^changes/dt=\d{4}-\d{2}-\d{2}/\d{8}T\d{6}Z\.json\.gz$")


class BadDigestRequest(KandjiSnapshotsError):
    """The invocation's event is not what the digest understands."""


class BadDigestDay(BadDigestRequest):
    """The day asked for is not a YYYY-MM-DD date."""


def digest_day(now: datetime, requested: str | None = None) -> str:
    """The day to digest: `requested` (YYYY-MM-DD) if given, else yesterday (UTC) of `now`."""
    if requested:
        try:
            if not isinstance(requested, str) or not _DAY.match(requested):
                raise ValueError
            datetime.strptime(requested, "%Y-%m-%d")
        except ValueError:
            raise BadDigestDay(f"day {requested!r} is not a date: give it as YYYY-MM-DD (UTC), "
                               "e.g. {\"day\": \"2026-11-23\"}, or leave it out for yesterday.") from None
        return requested
    return (now.astimezone(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class DigestRequest:
    """What an invocation asks for: {"day": "YYYY-MM-DD"} (default: yesterday, UTC), {"force": true}."""

    day: str
    force: bool = False  # send again although the day's digest was sent

    @classmethod
    def from_event(cls, event: Mapping[str, Any] | None, now: datetime) -> "DigestRequest":
        event = event or {}
        if not isinstance(event, Mapping):
            raise BadDigestRequest(f"the event {event!r} is not a JSON object: invoke the digest with {{}} for "
                                   "yesterday or {\"day\": \"2026-11-23\"} for a given day.")
        force = event.get("force", False)
        if not isinstance(force, bool):
            raise BadDigestRequest(f"force {force!r} is not true or false: give it as a JSON boolean, e.g. "
                               "{\"day\": \"2026-11-23\", \"force\": true} to send that day's digest again.")
        return cls(digest_day(now, event.get("day")), force)


@dataclass
class Digest:
    day: str
    snapshot_ids: list[str]
    by_change_type: Counter
    by_severity: Counter
    by_platform: Counter
    high: list[dict[str, Any]]  # the first MAX_LISTED_HIGH high-severity events, shortened
    changes_prefix: str

    @property
    def event_count(self) -> int:
        return sum(self.by_change_type.values())

    @property
    def high_count(self) -> int:
        return self.by_severity.get(HIGH, 0)

    def document(self) -> dict[str, Any]:
        """The JSON digest (what queues and functions receive)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": hashlib.sha256(f"{DAILY_DIGEST}\x1f{self.day}".encode()).hexdigest()[:32],
            "change_type": DAILY_DIGEST,
            "severity": highest(severity for severity, count in self.by_severity.items() if count),
            "day": self.day,
            "snapshot_count": len(self.snapshot_ids),
            "first_snapshot_id": self.snapshot_ids[0] if self.snapshot_ids else None,
            "last_snapshot_id": self.snapshot_ids[-1] if self.snapshot_ids else None,
            "event_count": self.event_count,
            "counts": {change_type: self.by_change_type.get(change_type, 0) for change_type in CHANGE_TYPES},
            # The tenant's own events (diff/tenant_changes.py): admin actions, threats, critical CVEs.
            "tenant_counts": {change_type: self.by_change_type.get(change_type, 0)
                              for change_type in TENANT_CHANGE_TYPES},
            "severity_counts": {severity: self.by_severity.get(severity, 0) for severity in SEVERITIES},
            "platform_counts": dict(sorted(self.by_platform.items())),
            "high_severity_events": self.high,
            "high_severity_listed": len(self.high),
            "changes_prefix": self.changes_prefix,
        }

    def subject(self) -> str:
        severity = self.document()["severity"]
        return subject(severity, f"Kandji daily digest {self.day}: {self.event_count} changes, "
                                 f"{self.high_count} high")

    def email(self, context: MessageContext = MessageContext()) -> str:
        lines = [f"Kandji fleet changes on {self.day} (UTC)", ""]
        if not self.snapshot_ids:
            lines.append("No snapshot was diffed that day: nothing to report (is the collector running?).")
        else:
            lines.append(f"{self.event_count} changes in {len(self.snapshot_ids)} diffed snapshots "
                         f"({self.snapshot_ids[0]} to {self.snapshot_ids[-1]}); {self.high_count} of high severity.")
            lines += ["", "By type:"] + [f"  {name}: {count}" for name, count in self.by_change_type.most_common()]
            lines += ["", "By severity:"] + [f"  {name}: {self.by_severity.get(name, 0)}"
                                             for name in reversed(SEVERITIES)]
            lines += ["", "By platform:"] + [f"  {name}: {count}" for name, count in self.by_platform.most_common()]
        if self.high:
            lines += ["", "High severity:"]
            lines += [f"  {item['snapshot_id']}  {item['summary']}" for item in self.high]
            if self.high_count > len(self.high):
                lines.append(f"  ... and {self.high_count - len(self.high)} more")
        lines += ["", f"Every change of the day: {self.changes_prefix}",
                  f"In {context.athena_place()}: the saved query \"{HIGH_SEVERITY_QUERY.title}\" lists the "
                  "high-severity ones; every change of the day:", "",
                  f"SELECT snapshot_id, change_type, severity, device_name, serial_number, platform\n"
                  f"FROM changes\nWHERE dt = '{self.day}'\nORDER BY snapshot_id, device_id, change_type"]
        return "\n".join(lines) + "\n"


def build_digest(store: ObjectStore, day: str) -> Digest:
    """Count the events of every changes file of `day`."""
    prefix = f"{CHANGES_PREFIX}dt={day}/"
    keys = sorted(key for key in store.list_keys(prefix) if _CHANGES_FILE.match(key))
    by_type: Counter = Counter()
    by_severity: Counter = Counter()
    by_platform: Counter = Counter()
    high: list[dict[str, Any]] = []
    for line in iter_lines(store, keys):
        event = json.loads(line)
        by_type[event.get("change_type")] += 1
        by_severity[event.get("severity")] += 1
        by_platform[event.get("platform") or "unknown"] += 1
        if event.get("severity") == HIGH and len(high) < MAX_LISTED_HIGH:
            high.append(_listed(event))
    location = store.location.rstrip("/")
    snapshot_ids = [key.rsplit("/", 1)[-1].split(".", 1)[0] for key in keys]
    return Digest(day, snapshot_ids, by_type, by_severity, by_platform, high, f"{location}/{prefix}")


def _listed(event: dict[str, Any]) -> dict[str, Any]:
    """A high-severity event as the digest lists it: names and ids are the device's user's to choose, so
    each is one bounded line (a 10,000-character name must not push the digest past SNS's size)."""
    user = event.get("user")
    return {"event_id": _bounded(event.get("event_id")), "snapshot_id": _bounded(event.get("snapshot_id")),
            "change_type": _bounded(event.get("change_type")), "device_id": _bounded(event.get("device_id")),
            "device_name": _bounded(event.get("device_name")), "serial_number": _bounded(event.get("serial_number")),
            "user": {key: _bounded(value) for key, value in user.items()} if isinstance(user, dict) else None,
            "summary": cut(f"{headline(event)} on {device_label(event, short_user(event))}", 200)}


def _bounded(value: Any) -> Any:
    return value if value is None else cut(ascii_text(value), LISTED_VALUE_MAX_CHARS)


def digest_message(digest: Digest, context: MessageContext = MessageContext()) -> Message:
    """The digest as one message, within SNS's size: high-severity events listed past it are counted instead."""
    while True:
        document = digest.document()
        attributes = {"change_type": DAILY_DIGEST, "severity": document["severity"], "platform": "all"}
        message = Message(document["event_id"], json.dumps(document, separators=(",", ":"), ensure_ascii=False),
                          attributes, digest.subject(), digest.email(context))
        if message.size <= MAX_BATCH_BYTES or not digest.high:
            return message
        logger.warning("the digest is over SNS's message size: listing fewer high-severity events",
                       extra={"day": digest.day, "bytes": message.size, "listed": len(digest.high)})
        digest.high = digest.high[: len(digest.high) // 2]


# --- sent once -------------------------------------------------------------------------

# The marker's states, as markers written before the claim module name them.
MARKER_STATES = ClaimStates(in_progress="sending", completed="sent", failed="failed")


class DigestMarker:
    """`changes/_digests/<day>.json`: the day's digest is being sent, was sent, or failed to be.

    A claim (snapshots.claims) before publishing. It lasts as long as the invocation that made it can run
    (`lease_seconds`, its remaining Lambda time): a `sending` marker past that belongs to an invocation that
    died. A `failed` or lapsed day is taken over with a write conditional on the marker's version, so of two
    invocations taking it over, one sends. Only PutObject is needed: a failure is recorded, not deleted.
    """

    def __init__(self, store: ObjectStore, day: str):
        self.day = day
        self._claims = ClaimOnce(store, digest_marker_key(day), owner_field="invocation", states=MARKER_STATES)
        self.key = self._claims.key
        self._claim: Claim | None = None

    def claim(self, now: datetime, lease_seconds: float, *, force: bool = False) -> dict[str, Any] | None:
        """None when this invocation is to send the digest; else the marker that says why not.
        `force`: send again, whatever the marker says."""
        claim = self._claims.acquire(uuid.uuid4().hex, now=now, lease_seconds=lease_seconds, day=self.day,
                                     may_take_over=lambda held: force)
        if not claim.won:
            return claim.record
        self._claim = claim
        return None

    def mark(self, state: str, now: datetime, **details: Any) -> None:
        if self._claim is None or self._claims.update(self._claim, state, now=now, **details) is None:
            logger.warning("the digest's day marker changed while this invocation held it: left as it is",
                           extra={"day": self.day, "state": state, "marker": self.read()})

    def read(self) -> dict[str, Any] | None:
        held = self._claims.read()
        return None if held is None else held.record


def publish_daily_digest(store: ObjectStore, publisher: Publisher, request: DigestRequest,
                         context: MessageContext = MessageContext(), *, now: datetime,
                         lease_seconds: float) -> dict[str, Any]:
    """Build the digest of `request.day` and publish it as one message, once per day.

    Returns what happened: `published`, and the counts when it did, or the marker when it did not.
    """
    day = request.day
    marker = DigestMarker(store, day)
    day_over = day < now.astimezone(timezone.utc).strftime("%Y-%m-%d")
    if not day_over:
        logger.warning("the day is not over: its digest is sent now but not marked as sent, so the scheduled "
                       "digest of the whole day is still sent", extra={"day": day})
    else:
        held = marker.claim(now, lease_seconds, force=request.force)
        if held is not None:
            logger.info(f"the digest of {day} was already sent (or is being sent): nothing published. To send it "
                        f"again, invoke the digest with {{\"day\": \"{day}\", \"force\": true}}",
                        extra={"day": day, "marker": held})
            return {"day": day, "published": False, "marker": held}
    digest = build_digest(store, day)
    message = digest_message(digest, context)
    try:
        publisher.publish_batch([message])
    except Exception:
        if day_over:
            _record_failure(marker, now)  # so the retry sends it, without waiting for the claim to expire
        raise
    document = digest.document()
    if day_over:
        marker.mark(MARKER_STATES.completed, now, event_id=document["event_id"], events=digest.event_count,
                    forced=request.force)
    logger.info("daily digest published", extra={"day": day, "events": digest.event_count, "forced": request.force,
                                                  "snapshots": len(digest.snapshot_ids), "bytes": message.size})
    return {"day": day, "published": True, "forced": request.force, "events": digest.event_count,
            "snapshots": len(digest.snapshot_ids), "high": digest.high_count}


def _record_failure(marker: DigestMarker, now: datetime) -> None:
    try:
        marker.mark(MARKER_STATES.failed, now)
    except Exception:  # the publish error is the one to report; the claim still expires with its lease
        logger.exception("could not record the failed digest", extra={"day": marker.day})
