"""Claim once: one small JSON record in the store says who does a piece of work, and how far it got.

The shape is Powertools' idempotency records, on S3 with conditional writes only (no DynamoDB):

    {"<owner field>": who, "state": in progress | completed | failed, "expires_at": when an
     in-progress claim lapses (optional), ...what the work records}

A record is created with `If-None-Match: *`, so one claimant wins. It is taken over, with
`If-Match: <ETag>` (so of two claimants taking it over, one wins), when its state allows:
  - failed: the last attempt gave up; the next one may go;
  - in progress by the same owner: the owner's retry carries on with its own claim;
  - in progress past `expires_at`: its owner died;
  - whatever the caller's `may_take_over` says (a holder that no longer exists, say), in any state.
Otherwise a completed record is never taken over. Used by the differ's transitions and the digest's days.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kandji_snapshots.snapshots.storage import ObjectNotFound, ObjectStore
from kandji_snapshots.snapshots.timeutil import format_timestamp, parse_timestamp

# Conditional writes that lose a race re-read and decide again; more than this many in a row is contention
# no real deployment has (a handful of invocations at most), so the last decision stands.
_MAX_ROUNDS = 8


@dataclass(frozen=True)
class ClaimStates:
    """The three states' names in a record (the digest's records predate this module: sending/sent)."""

    in_progress: str = "in_progress"
    completed: str = "completed"
    failed: str = "failed"


@dataclass(frozen=True)
class Claim:
    record: dict[str, Any]
    version: str  # the store's version tag of the record: later writes are conditional on it
    won: bool  # True: this claimant holds it; False: `record` is someone else's (or a completed one)


class ClaimOnce:
    def __init__(self, store: ObjectStore, key: str, *, owner_field: str = "owner",
                 states: ClaimStates = ClaimStates()):
        self._store = store
        self.key = key
        self._owner_field = owner_field
        self.states = states

    def read(self) -> Claim | None:
        try:
            body, version = self._store.get_versioned(self.key)
        except ObjectNotFound:
            return None
        return Claim(json.loads(body), version, won=False)

    def owner(self, claim: Claim) -> Any:
        return claim.record.get(self._owner_field)

    def acquire(self, owner: Any, *, now: datetime, lease_seconds: float | None = None,
                may_take_over: Callable[[Claim], bool] = lambda claim: False, **details: Any) -> Claim:
        """Claim the work for `owner` (in progress; lapsing after `lease_seconds` when given)."""
        record = {self._owner_field: owner, "state": self.states.in_progress, "at": format_timestamp(now), **details}
        if lease_seconds is not None:
            record["expires_at"] = format_timestamp(now + timedelta(seconds=max(lease_seconds, 0.0)))
        body = json.dumps(record).encode()
        held: Claim | None = None
        for _ in range(_MAX_ROUNDS):
            if self._store.create(self.key, body):
                return self._won(record)
            held = self.read()
            if held is None:
                continue  # deleted meanwhile: create again
            if not self._may_take_over(held, owner, now, may_take_over):
                return held
            if self._store.replace(self.key, body, version=held.version):
                return self._won(record)
        return held if held is not None else Claim(record, "", won=False)

    def update(self, claim: Claim, state: str, *, now: datetime, **details: Any) -> Claim | None:
        """Move a claim this claimant holds to `state`; None when someone took it over meanwhile."""
        record = {**claim.record, "state": state, "at": format_timestamp(now), **details}
        record.pop("expires_at", None)
        if not self._store.replace(self.key, json.dumps(record).encode(), version=claim.version):
            return None
        return self._won(record)

    def _won(self, record: dict[str, Any]) -> Claim:
        current = self.read()
        # Read back for its version; a record changed already (taken over in between) is not ours.
        if current is None or current.record != record:
            return Claim(record, "", won=True)
        return Claim(record, current.version, won=True)

    def _may_take_over(self, held: Claim, owner: Any, now: datetime, also: Callable[[Claim], bool]) -> bool:
        state = held.record.get("state")
        if also(held):
            return True
        if state == self.states.completed:
            return False
        if state == self.states.failed or self.owner(held) == owner:
            return True
        expires_at = parse_timestamp(held.record.get("expires_at"))
        return expires_at is not None and expires_at <= now
