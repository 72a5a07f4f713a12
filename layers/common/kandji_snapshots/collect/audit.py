"""The admin audit trail, read incrementally every run and stored exactly once per event.

The API's cursor is a position in time, so an event inserted late with an earlier `occurred_at` can land
behind a reader, and a run can be retried, fail half way, or overlap another. So each run:

1. starts from the state the last committed run left (`AuditState`: the latest `occurred_at` stored, the
   *watermark*, and the ids stored within `overlap` of it), found through the previous manifest and the
   claims of runs that continued from it (below);
2. reads every event from `watermark - overlap` on (the first run: `backfill` back), oldest first;
3. keeps an event only if its id is not among those stored and it is not older than `watermark - overlap`
   (older ones were stored already, or arrived too late for any window: the window is the deployer's
   `KANDJI_AUDIT_OVERLAP_HOURS`);
4. writes the kept events into `audit_events`, partitioned by the day each occurred, and its new state
   into its manifest.

Nothing is stored unless the manifest commits, so a run that fails mid-read stores nothing and the next
one resumes from the last committed state. Two runs that start from the same state (the CLI beside the
Lambda) would store the same events twice: just before its manifest, a run claims "I continued from
state S" by creating a key once (`layout.audit_claim_key`); the run that loses drops its events (the next
run reads them again from the winner's state). A claim whose run never committed is passed over once it is
older than `STALE_CLAIM` (longer than any run).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.snapshots.catalog import Manifest, UnreadableManifest, load_manifest, manifest_exists
from kandji_snapshots.snapshots.layout import audit_claim_key
from kandji_snapshots.snapshots.storage import ObjectNotFound, ObjectStore
from kandji_snapshots.snapshots.timeutil import format_timestamp, parse_timestamp

logger = logging.getLogger(__name__)

AUDIT_PAGE_LIMIT = 500  # the API's maximum
STALE_CLAIM = timedelta(hours=1)  # the collector's Lambda runs 15 minutes at most
MAX_CLAIM_ATTEMPTS = 50


class AuditApi(Protocol):
    def audit_events(self, start_date: str) -> Iterator[dict[str, Any]]: ...


@dataclass(frozen=True)
class AuditSettings:
    backfill_days: int = 30  # what the first run reads (the API keeps a year)
    overlap_hours: int = 24  # how late an event may arrive and still be stored


@dataclass(frozen=True)
class AuditState:
    """What the committed runs stored: the watermark and the ids stored within the overlap of it."""

    snapshot_id: str | None = None  # the run that committed this state (None: nothing stored yet)
    watermark: str | None = None
    recent: dict[str, str] = field(default_factory=dict)  # id -> occurred_at

    def to_document(self) -> dict[str, Any]:
        return {"snapshot_id": self.snapshot_id, "watermark": self.watermark,
                "recent": dict(sorted(self.recent.items()))}

    @classmethod
    def from_document(cls, document: dict[str, Any] | None) -> "AuditState":
        document = document or {}
        return cls(document.get("snapshot_id"), document.get("watermark"), dict(document.get("recent") or {}))


@dataclass
class AuditRead:
    """One run's read: the events to store (oldest first), the state they make, and how to commit it."""

    base: AuditState
    claim_attempt: int
    events: list[dict[str, Any]]
    state: AuditState
    served: int  # events the API served, repeats included
    repeats: int  # already stored (or repeated within this read)
    too_late: int  # older than the window: not stored
    unplaceable: list[str]  # ids whose occurred_at is no timestamp: not stored, named in the manifest


def audit_section(previous: Manifest | None) -> dict[str, Any] | None:
    return ((previous.document.get("tenant") or {}).get("audit")) if previous else None


class AuditTrailBlocked(KandjiSnapshotsError):
    """The run that continued the trail has a manifest this version cannot read: where the trail ends is
    unknown, so this run reads none of it (re-reading from before that run would store its events twice)."""


class AuditTrail:
    def __init__(self, api: AuditApi, store: ObjectStore, *, settings: AuditSettings = AuditSettings(),
                 clock: Callable[[], datetime]):
        self._api = api
        self._store = store
        self._settings = settings
        self._clock = clock

    # -- where the committed trail ends ----------------------------------------------------------------

    def committed_state(self, previous: Manifest | None) -> tuple[AuditState, int] | None:
        """The state of the last run that stored events, and the first claim attempt free on it; None when
        another run is committing from that state right now (this run then leaves the trail alone)."""
        section = audit_section(previous)
        state = AuditState.from_document(section.get("state") if section else None)
        attempt = 0
        while attempt < MAX_CLAIM_ATTEMPTS:
            claim = self._claim(state.snapshot_id, attempt)
            if claim is None:
                return state, attempt
            claimant = claim.get("snapshot_id")
            if claimant and manifest_exists(self._store, claimant):  # that run continued the trail: start there
                try:
                    state = AuditState.from_document(audit_section(load_manifest(self._store, claimant))["state"])
                except UnreadableManifest as error:
                    raise AuditTrailBlocked(
                        f"the audit trail is not read: snapshot {claimant} continued it and {error}. If a newer "
                        "kandji-snapshots wrote it, deploy that version again; if it was cut short, restore its "
                        "earlier version from the bucket's noncurrent versions, or delete it (the trail is then "
                        "read again from before that snapshot)") from None
                attempt = 0
                continue
            claimed_at = parse_timestamp(claim.get("claimed_at"))
            if claimed_at is not None and self._clock() - claimed_at < STALE_CLAIM:
                return None  # claimed moments ago by a run not committed yet
            attempt += 1  # a run that claimed and never committed: pass over its claim
        raise RuntimeError(f"{MAX_CLAIM_ATTEMPTS} stale audit claims on one state: remove "
                           f"{audit_claim_key(state.snapshot_id, 0)} and the following ones")

    def _claim(self, base_snapshot_id: str | None, attempt: int) -> dict[str, Any] | None:
        try:
            return json.loads(self._store.get(audit_claim_key(base_snapshot_id, attempt)))
        except ObjectNotFound:
            return None
        except ValueError:
            return {}  # unreadable: no claimant, no time: passed over at once

    def claim(self, read: AuditRead, snapshot_id: str) -> bool:
        """Claim, just before the manifest, that this run continues the trail from its base state."""
        body = json.dumps({"snapshot_id": snapshot_id, "claimed_at": format_timestamp(self._clock())}).encode()
        return self._store.create(audit_claim_key(read.base.snapshot_id, read.claim_attempt), body)

    # -- the read -----------------------------------------------------------------------------------------

    def read(self, base: AuditState, claim_attempt: int, snapshot_id: str) -> AuditRead:
        """Every event not stored yet (from the API; raises what the client raises)."""
        now = self._clock()
        watermark = parse_timestamp(base.watermark)
        overlap = timedelta(hours=self._settings.overlap_hours)
        cutoff = watermark - overlap if watermark else now - timedelta(days=self._settings.backfill_days)
        stored = set(base.recent)
        kept: dict[str, tuple[datetime, dict[str, Any]]] = {}
        served = repeats = too_late = 0
        unplaceable: list[str] = []
        # Whole days: whether the API takes a time in start_date is not documented; the cutoff trims.
        for event in self._api.audit_events(start_date=cutoff.strftime("%Y-%m-%d")):
            served += 1
            event_id = str(event.get("id") or "")
            occurred = parse_timestamp(event.get("occurred_at"))
            if not event_id or occurred is None:
                unplaceable.append(event_id or json.dumps(event, sort_keys=True)[:200])
                continue
            if event_id in stored or event_id in kept:
                repeats += 1
                continue
            if occurred < cutoff:
                too_late += 1
                continue
            kept[event_id] = (occurred, event)
        events = [event for _, event in sorted(kept.values(), key=lambda item: (item[0], str(item[1]["id"])))]
        new_watermark = max([moment for moment, _ in kept.values()] + ([watermark] if watermark else []), default=None)
        recent = {**base.recent, **{event_id: format_timestamp(moment) for event_id, (moment, _) in kept.items()}}
        if new_watermark is not None:
            keep_from = new_watermark - overlap
            recent = {event_id: at for event_id, at in recent.items() if (parse_timestamp(at) or now) >= keep_from}
        state = AuditState(snapshot_id, format_timestamp(new_watermark) if new_watermark else None, recent)
        if too_late:
            logger.warning("audit events older than the overlap window were not stored",
                           extra={"events": too_late, "overlap_hours": self._settings.overlap_hours})
        return AuditRead(base, claim_attempt, events, state, served, repeats, too_late, unplaceable)
