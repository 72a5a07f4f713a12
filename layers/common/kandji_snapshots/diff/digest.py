"""The daily digest: one message summarising a day's change events, for teams that want no mail per change.

It reads the changes files of one UTC day (`changes/dt=YYYY-MM-DD/<snapshot_id>.json.gz`,
written by the differ), counts the events by change type, severity and platform, lists the
high-severity ones, and publishes one message: the JSON digest for queues and functions, a
plain-text e-mail, and a subject, with the attribute `change_type` = `daily_digest` so that
subscription filter policies can select (or leave out) the digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from kandji_snapshots.diff.events import CHANGE_TYPES, SCHEMA_VERSION
from kandji_snapshots.diff.messages import HIGH_SEVERITY_QUERY, MessageContext, cut, device_label, headline, subject
from kandji_snapshots.diff.publisher import Message, Publisher
from kandji_snapshots.diff.rules import HIGH, SEVERITIES, highest
from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.snapshots.layout import CHANGES_PREFIX
from kandji_snapshots.snapshots.storage import ObjectStore
from kandji_snapshots.snapshots.table_io import iter_lines

logger = logging.getLogger(__name__)

DAILY_DIGEST = "daily_digest"
MAX_LISTED_HIGH = 100  # high-severity events listed one by one; the rest are counted
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CHANGES_FILE = re.compile(r"^changes/dt=\d{4}-\d{2}-\d{2}/\d{8}T\d{6}Z\.json\.gz$")


class BadDigestDay(KandjiSnapshotsError):
    """The day asked for is not a YYYY-MM-DD date."""


def digest_day(now: datetime, requested: str | None = None) -> str:
    """The day to digest: `requested` (YYYY-MM-DD) if given, else yesterday (UTC) of `now`."""
    if requested:
        try:
            if not _DAY.match(requested):
                raise ValueError
            datetime.strptime(requested, "%Y-%m-%d")
        except ValueError:
            raise BadDigestDay(f"day {requested!r} is not a date: give it as YYYY-MM-DD (UTC), "
                               "e.g. {\"day\": \"2026-11-23\"}, or leave it out for yesterday.") from None
        return requested
    return (now.astimezone(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%d")


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
            lines += ["", "By severity:"] + [f"  {name}: {self.by_severity.get(name, 0)}" for name in reversed(SEVERITIES)]
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
            high.append({"event_id": event.get("event_id"), "snapshot_id": event.get("snapshot_id"),
                         "change_type": event.get("change_type"), "device_id": event.get("device_id"),
                         "device_name": event.get("device_name"), "serial_number": event.get("serial_number"),
                         "summary": cut(f"{headline(event)} on {device_label(event)}", 200)})
    location = store.location.rstrip("/")
    snapshot_ids = [key.rsplit("/", 1)[-1].split(".", 1)[0] for key in keys]
    return Digest(day, snapshot_ids, by_type, by_severity, by_platform, high, f"{location}/{prefix}")


def digest_message(digest: Digest, context: MessageContext = MessageContext()) -> Message:
    document = digest.document()
    attributes = {"change_type": DAILY_DIGEST, "severity": document["severity"], "platform": "all"}
    return Message(document["event_id"], json.dumps(document, separators=(",", ":"), ensure_ascii=False),
                   attributes, digest.subject(), digest.email(context))


def publish_daily_digest(store: ObjectStore, publisher: Publisher, day: str,
                         context: MessageContext = MessageContext()) -> dict[str, Any]:
    """Build the digest of `day` and publish it as one message; returns the JSON digest."""
    digest = build_digest(store, day)
    message = digest_message(digest, context)
    publisher.publish_batch([message])
    logger.info("daily digest published", extra={"day": day, "events": digest.event_count,
                                                  "snapshots": len(digest.snapshot_ids), "bytes": message.size})
    return digest.document()
