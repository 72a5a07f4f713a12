"""The simulator's fleet served in memory: the payloads the Kandji simulator sends over HTTP, handed to the
collector through its KandjiApi protocol without HTTP, so the domain rules run on realistic fleets of every
platform (quirks, real shapes, Prism posture) in a fraction of the time.

    fleet = Fleet.generate(1100, seed=21)
    kandji = FleetApi(fleet)
    first = kandji.collect(store, hour=10)                     # a committed snapshot
    fleet.apply_demo_changes(); kandji.collect(store, hour=11)

With `budget`, each call is charged the requests KandjiClient would send for it (the list and Prism
tables paged as their paginators page them), so the rolling refresh plans its run as it does on a tenant.
The HTTP path itself (client, pagers, retries, moto) is the end-to-end tests' job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from kandji_fakes import StepClock

from kandji_snapshots.collect.collector import SnapshotCollector
from kandji_snapshots.collect.refresh import RequestBudget
from kandji_snapshots.errors import DeviceNotFound, KandjiAuthError
from kandji_snapshots.kandji.paging import DeviceListPaginator, PrismPaginator
from kandji_snapshots.settings import CollectorSettings
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.storage import ObjectStore
from simulator import Fleet
from simulator.prism_categories import PrismCategories
from simulator.server import PRISM_PAGE_ROWS


def as_served(payload: Any) -> Any:
    """The payload as the client reads it off the wire: JSON text decoded again (no shared objects)."""
    return json.loads(json.dumps(payload))


class FleetApi:
    """A `Fleet` (and its Prism posture categories) through the KandjiApi protocol, in memory."""

    host = "acme.api.kandji.io"

    def __init__(self, fleet: Fleet, *, budget: RequestBudget | None = None, prism: bool = True):
        self.fleet = fleet
        self.prism = PrismCategories(fleet)  # `prism.set(device_id, category, ...)` changes a posture row
        self.budget = budget
        self.prism_readable = prism  # False: a token without the Prism permissions (403 on every category)

    def _charge(self, requests: int = 1) -> None:
        for _ in range(requests):
            if self.budget is not None:
                self.budget.take()

    def list_devices(self) -> list[dict[str, Any]]:
        items = self.fleet.list_items()
        self._charge(DeviceListPaginator.requests_for(len(items)))
        return as_served(items)

    def device_details(self, device_id: str) -> dict[str, Any]:
        self._charge()
        if device_id not in self.fleet:
            raise DeviceNotFound("404", status=404, endpoint="details")
        return as_served(self.fleet.details(device_id))

    def device_apps(self, device_id: str) -> list[dict[str, Any]]:
        self._charge()
        if device_id not in self.fleet:
            raise DeviceNotFound("404", status=404, endpoint="apps")
        return as_served(self.fleet.apps(device_id))

    def prism_apps(self) -> Iterator[dict[str, Any]]:
        self._charge(PrismPaginator.requests_for(self.fleet.prism_app_total(), PRISM_PAGE_ROWS))
        return iter(as_served(list(self.fleet.prism_app_rows())))

    def iter_prism_category(self, category: str) -> Iterator[dict[str, Any]]:
        if not self.prism_readable:
            raise KandjiAuthError("403", status=403, endpoint=f"prism_{category}")
        rows = self.prism.rows(category)
        self._charge(PrismPaginator.requests_for(len(rows), PRISM_PAGE_ROWS))
        return iter(as_served(rows))

    def collect(self, store: ObjectStore, *, hour: int, apps_source: str = "per-device",
                budget: int | None = None) -> Manifest:
        """A snapshot taken at `hour`:00 of 2026-11-23 (`budget`: requests allowed this run, None for no cap)."""
        self.budget = RequestBudget(per_run=budget) if budget is not None else None
        clock = StepClock(datetime(2026, 11, 23, hour, tzinfo=timezone.utc))
        settings = CollectorSettings(max_workers=4, apps_source=apps_source, request_budget=budget)
        return SnapshotCollector(self, store, clock=clock, settings=settings, budget=self.budget).collect()
