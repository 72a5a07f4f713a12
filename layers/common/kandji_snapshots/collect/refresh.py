"""Rolling refresh: which devices to fetch when a run cannot afford them all.

Kandji allows 10,000 requests an hour per tenant, shared with every other
integration, and details + apps cost two requests per device. When the budget
or the Lambda's time cannot cover the fleet, the run refreshes the devices that
most need it and carries the others forward from the previous snapshot:

1. new devices (no data yet), in device order;
2. devices that checked in since their data was fetched, oldest data first;
3. the rest, oldest data first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.snapshots.device_groups import DeviceGroups
from kandji_snapshots.snapshots.device_rows import row_head, row_keys
from kandji_snapshots.snapshots.storage import ObjectStore
from kandji_snapshots.snapshots.table_io import iter_lines
from kandji_snapshots.snapshots.timeutil import normalize_timestamp


class BudgetExhausted(KandjiSnapshotsError):
    """The run's request budget is spent: devices not yet fetched are carried forward."""


@dataclass
class RequestBudget:
    """How many more requests this run may send.

    `per_run` is the operator's cap; `hourly_reserve` is what to leave of the tenant's
    hourly limit for other integrations (read from `x-ratelimit-remaining-hour` when
    the API sends it); the deadline turns the Lambda's remaining time into requests
    at the limiter's pace.
    """

    per_run: int | None = None
    hourly_reserve: int = 0
    requests_per_second: float = 45.0
    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._spent = 0
        self._remaining_hour: int | None = None
        self._lock = threading.Lock()

    def observe_remaining_hour(self, remaining: int) -> None:
        with self._lock:
            self._remaining_hour = remaining

    def take(self) -> None:
        """Claim one request; raises BudgetExhausted instead of overspending."""
        with self._lock:
            if self.per_run is not None and self._spent >= self.per_run:
                raise BudgetExhausted(f"the run's request budget of {self.per_run} is spent")
            if self._remaining_hour is not None and self._remaining_hour - 1 < self.hourly_reserve:
                raise BudgetExhausted(f"only the reserve of {self.hourly_reserve} hourly requests is left "
                                      "for other integrations")
            self._spent += 1
            if self._remaining_hour is not None:
                self._remaining_hour -= 1

    @property
    def spent(self) -> int:
        return self._spent

    def affordable(self, retry_slack: float = 0.03) -> int | None:
        """Requests this run can still plan for, keeping a little slack for retries (None: no limit)."""
        limits = []
        with self._lock:
            if self.per_run is not None:
                limits.append(self.per_run - self._spent)
            if self._remaining_hour is not None:
                limits.append(self._remaining_hour - self.hourly_reserve)
        if self.deadline is not None:
            limits.append(int((self.deadline - self.clock()) * self.requests_per_second))
        if not limits:
            return None
        usable = min(limits)
        return max(0, int(usable - max(2, usable * retry_slack)))


def plan_refresh(devices: list[dict[str, Any]], previous_fetched_at: dict[str, str | None],
                 capacity: int | None) -> set[str]:
    """The ids of the devices to fetch now; `capacity` is how many devices the run can afford."""
    ids = [str(device["device_id"]) for device in devices]
    if capacity is None or capacity >= len(ids):
        return set(ids)

    def priority(device: dict[str, Any]) -> tuple[int, str, str]:
        device_id = str(device["device_id"])
        fetched = previous_fetched_at.get(device_id)
        if fetched is None:
            return (0, "", device_id)
        checked_in = normalize_timestamp(device.get("last_check_in")) or ""
        return (1 if checked_in > fetched else 2, fetched, device_id)

    ranked = sorted(devices, key=priority)
    return {str(device["device_id"]) for device in ranked[:max(0, capacity)]}


def previous_fetched_at(store: ObjectStore, details_keys: Iterable[str]) -> dict[str, str | None]:
    """device_id -> when its details were fetched, read from the previous snapshot's prefixes only."""
    return dict(row_keys(line) for line in iter_lines(store, details_keys))


def with_snapshot_id(line: bytes, snapshot_id: str) -> bytes:
    """A carried row under the new snapshot id; the rest of the line, `fetched_at` included, is kept."""
    head = b'{"snapshot_id":"'
    if not line.startswith(head):
        raise ValueError("snapshot row does not start with snapshot_id")
    return head + snapshot_id.encode() + line[len(head) + 16:]


class PreviousRows(DeviceGroups[bytes]):
    """One table of the previous snapshot, walked in device order, handing out a device's lines."""

    def __init__(self, lines: Iterator[bytes]):
        super().__init__(lines, lambda line: row_head(line, False)[0].decode())
