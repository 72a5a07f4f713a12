"""Which snapshot each diff compares against: every committed snapshot is the `previous` of one diff only.

Two collector runs that overlap commit A (10:00) and B (10:01) after snapshot 09:00. The differ of B
diffs against A when A is committed by then; if it is not, B claims 09:00, covers A's changes too, and
A's differ finds 09:00 taken by a newer snapshot and publishes nothing. Either way every change is
published by one differ only.

    changes/_transitions/<previous>.json         a claim (snapshots.claims): {"snapshot_id": who diffs
                                                 against it, "state": in_progress | completed, ...}
    changes/_published/<snapshot>/previous.json   {"previous_snapshot_id", "replaces"}: this snapshot's
                                                 choice, which its retries keep

A claim, once made, is kept by its owner's retries for as long as the previous snapshot is committed:
a snapshot that found it taken published nothing and counts on the owner to cover its changes (a
retry that moved on to a newer previous would lose them). A claim whose holder is no longer committed
(its manifest deleted because a part of it was lost, or unreadable) is taken over; the changes the holder
already published are then not sent again (`Transition.replaces`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from kandji_snapshots.errors import SnapshotConflict
from kandji_snapshots.snapshots.catalog import manifest_readable
from kandji_snapshots.snapshots.claims import Claim, ClaimOnce
from kandji_snapshots.snapshots.layout import published_marker_prefix, transition_key
from kandji_snapshots.snapshots.storage import ObjectNotFound, ObjectStore


@dataclass(frozen=True)
class Transition:
    previous_snapshot_id: str | None  # what this snapshot is diffed against
    superseded_by: str | None = None  # a newer snapshot diffs against it: publish nothing
    replaces: str | None = None  # an uncommitted snapshot that diffed against it first: what it published stands


@dataclass(frozen=True)
class _Choice:
    previous_snapshot_id: str | None
    replaces: str | None = None


class TransitionClaims:
    def __init__(self, store: ObjectStore, snapshot_id: str, now: Callable[[], datetime]):
        self._store = store
        self._snapshot_id = snapshot_id
        self._now = now
        self._choice_key = f"{published_marker_prefix(snapshot_id)}previous.json"

    def claim(self, latest_before: Callable[[], str | None]) -> Transition:
        """The previous snapshot to diff against, claimed; `latest_before` lists the committed ones."""
        choice = self._choice()
        if choice is not None and self._committed(choice.previous_snapshot_id):
            previous, replaces = choice.previous_snapshot_id, choice.replaces  # the owner's retry keeps its claim
        else:
            if choice is not None:  # its previous is no longer committed: nothing can be computed against it
                self._release(choice.previous_snapshot_id)
            previous, replaces = latest_before(), None
        while True:
            claims = self._claims(previous)
            orphans: list[str] = []

            def orphaned(held: Claim) -> bool:
                holder = claims.owner(held)
                if holder == self._snapshot_id or self._committed(holder):
                    return False
                orphans.append(str(holder))
                return True
            claim = claims.acquire(self._snapshot_id, now=self._now(), previous_snapshot_id=previous,
                                   may_take_over=orphaned)
            holder = str(claims.owner(claim))
            if claim.won or holder == self._snapshot_id:  # ours (completed by an earlier attempt, say)
                if orphans:  # the last one seen is the one taken over
                    replaces = orphans[-1]
                self._record(_Choice(previous, replaces))
                return Transition(previous, replaces=replaces)
            if holder > self._snapshot_id:
                self._record(_Choice(previous))
                return Transition(previous, superseded_by=holder)
            # An older snapshot, committed since, took `previous`: it sits between; diff against the latest.
            newer = latest_before()
            if newer is None or (previous is not None and newer <= previous):
                raise SnapshotConflict(
                    f"Snapshot {holder} was diffed against {previous or 'nothing (first snapshot)'}, yet the "
                    f"snapshots committed before {self._snapshot_id} end at {newer or 'none'}: the listing of "
                    "manifests and the claims disagree. Invoke the differ again for this snapshot; nothing was "
                    "published for it.")
            previous = newer

    def complete(self) -> None:
        """This snapshot's diff is published: its claim is done (kept, never taken over while it is committed)."""
        choice = self._choice()
        if choice is None:
            return
        claims = self._claims(choice.previous_snapshot_id)
        held = claims.read()
        if held is not None and claims.owner(held) == self._snapshot_id:
            claims.update(held, claims.states.completed, now=self._now())

    def _committed(self, snapshot_id: object) -> bool:
        """Committed and readable: a snapshot whose manifest is gone, cut short or of a newer schema no longer
        counts (the snapshots before and after it are compared instead)."""
        return snapshot_id is None or manifest_readable(self._store, str(snapshot_id))

    def _claims(self, previous: str | None) -> ClaimOnce:
        return ClaimOnce(self._store, transition_key(previous), owner_field="snapshot_id")

    def _release(self, previous: str | None) -> None:
        claims = self._claims(previous)
        held = claims.read()
        if held is not None and claims.owner(held) == self._snapshot_id:  # only ever our own claim
            self._store.delete([claims.key])

    def _record(self, choice: _Choice) -> None:
        body = {"previous_snapshot_id": choice.previous_snapshot_id, "replaces": choice.replaces}
        self._store.put(self._choice_key, json.dumps(body).encode(), content_type="application/json")

    def _choice(self) -> _Choice | None:
        try:
            document = json.loads(self._store.get(self._choice_key))
        except ObjectNotFound:
            return None
        return _Choice(document["previous_snapshot_id"], document.get("replaces"))
