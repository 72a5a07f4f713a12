"""The collector's domain: one complete snapshot of the fleet, committed by its manifest.

    list devices -> read every device's Prism posture (collect/posture.py) -> plan which to
    refresh (all, unless the request budget or the time says otherwise) -> fetch details + apps
    concurrently, in device_id order -> normalize -> stream four tables to the store, carrying
    the rest forward -> write the manifest last

If anything fails before the manifest is written, the parts already written are
deleted and the error propagates: a snapshot without its manifest does not exist,
and the differ never sees it. A device list that collapsed since the last snapshot
is refused, so an API fault is never reported as devices removed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from kandji_snapshots import __version__
from kandji_snapshots.collect.posture import PostureIndex, PostureReader, PreviousPosture
from kandji_snapshots.collect.prism_apps import PrismAppsIndex
from kandji_snapshots.collect.refresh import (
    BudgetExhausted,
    PreviousRows,
    RequestBudget,
    plan_refresh,
    previous_fetched_at,
    with_snapshot_id,
)
from kandji_snapshots.collect.tenant_sources import TenantReader, TenantRun
from kandji_snapshots.diff.fingerprints import FingerprintRecorder
from kandji_snapshots.diff.rules import ChangeRules
from kandji_snapshots.errors import DeviceNotFound, KandjiApiError, KandjiAuthError, SnapshotConflict
from kandji_snapshots.settings import CollectorSettings
from kandji_snapshots.snapshots.catalog import (
    MANIFEST_SCHEMA_VERSION,
    Manifest,
    load_manifest,
    manifest_exists,
    previous_readable_snapshot_id,
    write_manifest,
)
from kandji_snapshots.snapshots.committed import record_commit_or_log
from kandji_snapshots.snapshots.device_rows import row_keys
from kandji_snapshots.snapshots.layout import TABLE_NAMES
from kandji_snapshots.snapshots.normalize import app_rows, details_row, device_row, posture_row
from kandji_snapshots.snapshots.storage import ObjectStore
from kandji_snapshots.snapshots.table_io import TableWriter, iter_lines
from kandji_snapshots.snapshots.timeutil import format_timestamp, partition_date, snapshot_id_for, utc_now

logger = logging.getLogger(__name__)


class KandjiApi(Protocol):
    """What the collector needs from the Kandji adapter (`KandjiClient`, or a fake)."""

    host: str

    def list_devices(self) -> list[dict[str, Any]]: ...

    def device_details(self, device_id: str) -> dict[str, Any]: ...

    def device_apps(self, device_id: str) -> list[dict[str, Any]]: ...

    def prism_apps(self) -> Iterator[dict[str, Any]]: ...

    def iter_prism_category(self, category: str) -> Iterator[dict[str, Any]]: ...


@dataclass(frozen=True)
class _Fetched:
    fetched_at: str
    details: dict[str, Any]
    apps: list[dict[str, Any]]


@dataclass(frozen=True)
class _Skipped:
    reason: str


@dataclass(frozen=True)
class _NotFetched:
    """Not refreshed this run (planned, or the budget ran out): carried forward if possible."""


class SnapshotCollector:
    def __init__(self, api: KandjiApi, store: ObjectStore, *, settings: CollectorSettings = CollectorSettings(),
                 clock: Callable[[], datetime] = utc_now, request_stats: Callable[[], dict[str, Any]] | None = None,
                 budget: RequestBudget | None = None, sleep: Callable[[float], None] = time.sleep,
                 progress: Callable[[int, int], None] | None = None, tenant: TenantReader | None = None,
                 change_rules: ChangeRules | None = None):
        self._api = api
        self._tenant = tenant  # the tenant-wide sources (collect/tenant_sources.py); None: devices only
        # The differ's ignore settings, to fingerprint each device as it compares them (diff/fingerprints.py).
        self._change_rules = change_rules or ChangeRules()
        self._store = store
        self._settings = settings
        self._clock = clock
        self._request_stats = request_stats or (lambda: {})
        self._budget = budget
        self._sleep = sleep
        # Called with (devices_done, devices_total): (0, total) once the list is read, then after
        # each device is written or skipped. Runs on the collecting thread; it must not raise.
        self._progress = progress

    def collect(self, correlation_id: str | None = None) -> Manifest:
        started, snapshot_id = self._new_snapshot_id()
        fingerprints = FingerprintRecorder(self._change_rules)
        writers = {table: TableWriter(self._store, table, snapshot_id, rows_per_part=self._settings.rows_per_part,
                                      on_line=fingerprints.on_line(table)) for table in TABLE_NAMES}
        committing = False
        tenant: TenantRun | None = None
        try:
            with ExitStack() as cleanup:
                devices = sorted(self._api.list_devices(), key=lambda device: str(device["device_id"]))
                logger.info("device list read", extra={"devices": len(devices), "snapshot_id": snapshot_id})
                posture = self._read_posture(devices)  # posture first: details and apps get what is left
                prism = self._prism_apps()
                if prism is not None:
                    cleanup.enter_context(prism[1])
                previous = self._previous(snapshot_id)
                self._check_fleet_drop(devices, previous)
                if self._tenant is not None:  # before details: the plan below counts what they cost
                    tenant = self._tenant.read(snapshot_id, previous)
                refresh = self._plan(devices, previous, requests_per_device=1 if prism else 2)
                counts = self._write_tables(devices, refresh, previous, prism, snapshot_id, writers, posture)
            tables = {table: writer.close() for table, writer in writers.items()}
            counts["fingerprints"] = fingerprints.write(self._store, snapshot_id)
            manifest = self._manifest(snapshot_id, correlation_id, started, previous, devices, prism is not None,
                                      counts, tables)
            if tenant is not None:
                self._tenant.commit(tenant, snapshot_id)
                manifest.document["tenant"] = tenant.section()
            committing = True
            write_manifest(self._store, manifest)  # the commit point
        except BaseException:
            if not committing:
                self._discard([*writers.values(), fingerprints])
                if self._tenant is not None:
                    self._tenant.discard(tenant)
                raise
            if not self._committed_anyway(snapshot_id, [*writers.values(), fingerprints], tenant):
                raise
            logger.warning("the manifest write reported an error but the manifest is stored: committed",
                           extra={"snapshot_id": snapshot_id})
        record_commit_or_log(self._store, manifest, writer="collector")  # Athena's row: after the manifest
        logger.info("snapshot committed", extra={"snapshot_id": snapshot_id, **{
            key: manifest.document[key] for key in ("device_count", "refreshed_devices", "carried_devices")}})
        return manifest

    def _new_snapshot_id(self) -> tuple[datetime, str]:
        """The run's start and id; a run starting in the same second as a committed one waits a second."""
        for _ in range(3):
            started = self._clock()
            snapshot_id = snapshot_id_for(started)
            if not manifest_exists(self._store, snapshot_id):
                return started, snapshot_id
            self._sleep(1.0 - started.microsecond / 1_000_000)
        raise SnapshotConflict(f"Snapshot {snapshot_id} is already committed and the clock did not move on. "
                               "Nothing was written; check the system clock.")

    def _committed_anyway(self, snapshot_id: str, writers: list[TableWriter | FingerprintRecorder],
                          tenant: TenantRun | None) -> bool:
        """After a failed manifest write: is it stored after all? Parts are deleted only when surely not."""
        try:
            stored = manifest_exists(self._store, snapshot_id)
        except Exception:
            return False  # unknown: keep the parts (orphans are harmless, a manifest without parts is not)
        if not stored:
            self._discard(writers)
            if self._tenant is not None:
                self._tenant.discard(tenant)
        return stored

    def _manifest(self, snapshot_id: str, correlation_id: str | None, started: datetime,
                  previous: Manifest | None, devices: list[dict[str, Any]], from_prism: bool,
                  counts: dict[str, Any], tables: dict[str, Any]) -> Manifest:
        finished = self._clock()
        return Manifest({
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "snapshot_id": snapshot_id,
            "dt": partition_date(snapshot_id),
            "correlation_id": correlation_id,
            "started_at": format_timestamp(started),
            "finished_at": format_timestamp(finished),
            "duration_seconds": round((finished - started).total_seconds(), 3),
            "api_host": self._api.host,
            "collector_version": __version__,
            "previous_snapshot_id": previous.snapshot_id if previous else None,
            "device_count": tables["devices"]["rows"],
            "listed_devices": len(devices),
            "skipped_devices": counts["skipped"],
            "apps_source": "prism" if from_prism else "per-device",
            "refreshed_devices": counts["refreshed"],
            "carried_devices": counts["carried"],
            "pending_devices": counts["pending"],
            "request_budget": self._budget.per_run if self._budget else None,
            "tables": tables,
            "posture": counts["posture"],
            "fingerprints": counts["fingerprints"],
            "requests": self._request_stats(),
        })

    def _check_fleet_drop(self, devices: list[dict[str, Any]], previous: Manifest | None) -> None:
        if previous is None:
            return
        before = int(previous.document.get("listed_devices", previous.document.get("device_count", 0)))
        floor = before * (1 - self._settings.max_fleet_drop_percent / 100)
        if before >= 10 and len(devices) < floor:
            raise KandjiApiError(
                f"The device list shrank from {before} to {len(devices)} devices since snapshot "
                f"{previous.snapshot_id}: more than {self._settings.max_fleet_drop_percent:g}%. That is more likely "
                "an API fault than a mass unenrolment, so nothing was committed and no device is reported removed. "
                "If the fleet really shrank, raise KANDJI_MAX_FLEET_DROP_PERCENT (100 turns the check off) for "
                "one run.", endpoint="devices")

    def _previous(self, snapshot_id: str) -> Manifest | None:
        previous_id = previous_readable_snapshot_id(self._store, snapshot_id)
        return load_manifest(self._store, previous_id) if previous_id else None

    def _prism_apps(self) -> tuple[str, PrismAppsIndex] | None:
        """Read every app fleet-wide from Prism, if configured (and, for `auto`, allowed)."""
        if self._settings.apps_source == "per-device":
            return None
        fetched_at = format_timestamp(self._clock())
        index = PrismAppsIndex(self._settings.temp_dir)
        try:
            index.load(self._api.prism_apps())
        except (KandjiAuthError, KandjiApiError) as error:
            index.close()
            allowed_to_fall_back = error.status in (403, 404) and self._settings.apps_source == "auto"
            if not allowed_to_fall_back:
                raise
            logger.warning("Prism apps not available to this token: apps are read per device",
                           extra={"status": error.status})
            return None
        except BaseException:
            index.close()
            raise
        logger.info("Prism apps read", extra={"rows": index.rows})
        return fetched_at, index

    def _read_posture(self, devices: list[dict[str, Any]]) -> PostureIndex:
        """Every device's Prism posture categories (collect/posture.py); each one optional."""
        def spent(endpoint: str) -> int:
            return int((self._request_stats().get("by_endpoint") or {}).get(endpoint, 0))
        reader = PostureReader(self._api, requests_spent=spent)
        return reader.read((str(device["device_id"]) for device in devices), format_timestamp(self._clock()))

    def _plan(self, devices: list[dict[str, Any]], previous: Manifest | None, *, requests_per_device: int) -> set[str]:
        """Every device, unless the budget or the time left cannot cover them all."""
        affordable = self._budget.affordable() if self._budget else None
        capacity = None if affordable is None else affordable // requests_per_device
        if capacity is None or capacity >= len(devices):
            return {str(device["device_id"]) for device in devices}
        fetched_at = previous_fetched_at(self._store, previous.table_keys("device_details")) if previous else {}
        refresh = plan_refresh(devices, fetched_at, capacity)
        logger.warning("request budget cannot cover every device: rolling refresh",
                       extra={"devices": len(devices), "refreshing": len(refresh)})
        return refresh

    def _write_tables(self, devices: list[dict[str, Any]], refresh: set[str], previous: Manifest | None,
                      prism: tuple[str, PrismAppsIndex] | None, snapshot_id: str,
                      writers: dict[str, TableWriter], posture: PostureIndex) -> dict[str, Any]:
        skipped: list[dict[str, Any]] = []
        counts = {"refreshed": 0, "carried": 0, "pending": 0}
        carried = _CarriedRows(self._store, previous)
        previous_posture = PreviousPosture(self._store, previous)  # what was not read now keeps the last read
        for device, outcome in _reporting_progress(self._fetch_in_order(devices, refresh, with_apps=prism is None),
                                                   len(devices), self._progress):
            device_id = str(device["device_id"])
            previous_details, previous_apps = ([], []) if isinstance(outcome, _Fetched) else carried.take(device_id)
            if isinstance(outcome, _Skipped):
                # A 404 may be a glitch: keep what the previous snapshot knew, so the next complete
                # read is compared with it (a change in between is reported then, once).
                skipped.append({"device_id": device_id, "serial_number": device.get("serial_number"),
                                "device_name": device.get("device_name"), "platform": device.get("platform"),
                                "reason": outcome.reason, "carried": bool(previous_details)})
                logger.warning("device skipped", extra={"device_id": device_id, "reason": outcome.reason,
                                                        "carried": bool(previous_details)})
                if not previous_details:
                    continue  # nothing known to carry: the device is absent from this snapshot
            writers["devices"].write(device_row(device, snapshot_id))
            # Every listed device, every run.
            categories, carried_from = posture.take(device_id, previous_posture.for_device(device_id))
            writers["device_posture"].write(posture_row(categories, snapshot_id, device_id, posture.fetched_at,
                                                        carried_from))
            if isinstance(outcome, _Fetched):
                counts["refreshed"] += 1
                writers["device_details"].write(
                    details_row(outcome.details, snapshot_id, device_id, outcome.fetched_at))
            elif previous_details and (isinstance(outcome, _Skipped) or row_keys(previous_details[0])[1] is not None):
                if isinstance(outcome, _NotFetched):  # a skipped device is counted as skipped
                    counts["carried"] += 1
                for line in previous_details:
                    writers["device_details"].write_line(with_snapshot_id(line, snapshot_id), device_id)
            else:
                # Never fetched, so nothing known to carry: keep the device, details unknown (fetched_at null).
                counts["pending"] += 1
                writers["device_details"].write(details_row({}, snapshot_id, device_id, None))
            if prism is not None:  # Prism read every device's apps: always fresh
                fetched_at, index = prism
                self._write_apps(writers, index.take(device_id), snapshot_id, device_id, fetched_at)
            elif isinstance(outcome, _Fetched):
                self._write_apps(writers, outcome.apps, snapshot_id, device_id, outcome.fetched_at)
            else:
                for line in previous_apps:
                    writers["device_apps"].write_line(with_snapshot_id(line, snapshot_id), device_id)
        counts["skipped"] = skipped
        counts["posture"] = posture.summary()
        return counts

    @staticmethod
    def _write_apps(writers: dict[str, TableWriter], apps: list[dict[str, Any]], snapshot_id: str,
                    device_id: str, fetched_at: str) -> None:
        for row in app_rows(apps, snapshot_id, device_id, fetched_at):
            writers["device_apps"].write(row)

    def _fetch(self, device_id: str, with_apps: bool) -> _Fetched | _Skipped | _NotFetched:
        fetched_at = format_timestamp(self._clock())
        try:
            details = self._api.device_details(device_id)
            apps = self._api.device_apps(device_id) if with_apps else []
        except DeviceNotFound as missing:
            return _Skipped(f"{missing.endpoint} answered 404: unenrolled during the run")
        except BudgetExhausted:
            return _NotFetched()
        return _Fetched(fetched_at, details, apps)

    def _fetch_in_order(self, devices: list[dict[str, Any]], refresh: set[str], *,
                        with_apps: bool) -> Iterator[tuple[dict[str, Any], _Fetched | _Skipped | _NotFetched]]:
        """Fetch concurrently but yield in list order, holding at most a small window in memory."""
        window = self._settings.max_workers * 4
        pending: deque[tuple[dict[str, Any], Future]] = deque()
        with ThreadPoolExecutor(max_workers=self._settings.max_workers, thread_name_prefix="kandji") as pool:
            try:
                for device in devices:
                    device_id = str(device["device_id"])
                    if device_id in refresh:
                        pending.append((device, pool.submit(self._fetch, device_id, with_apps)))
                    else:
                        pending.append((device, _done(_NotFetched())))
                    if len(pending) >= window:
                        device_done, future = pending.popleft()
                        yield device_done, future.result()
                while pending:
                    device_done, future = pending.popleft()
                    yield device_done, future.result()
            finally:
                for _, future in pending:
                    future.cancel()

    def _discard(self, writers: list[TableWriter | FingerprintRecorder]) -> None:
        """Best effort: remove the parts of a snapshot that will never be committed."""
        keys = [key for writer in writers for key in writer.abort()]
        if not keys:
            return
        try:
            self._store.delete(keys)
        except Exception:  # the original error matters more; orphans have no manifest anyway
            logger.warning("could not delete the parts of the failed snapshot", extra={"keys": len(keys)})


def _reporting_progress(items: Iterator[Any], total: int,
                        progress: Callable[[int, int], None] | None) -> Iterator[Any]:
    """Yield `items`, reporting (done, total) once each one has been handled by the loop consuming them."""
    if progress is None:
        yield from items
        return
    progress(0, total)
    for done, item in enumerate(items, start=1):
        yield item
        progress(done, total)


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class _CarriedRows:
    """The previous snapshot's details and apps lines, walked once in device order, opened on first use."""

    def __init__(self, store: ObjectStore, previous: Manifest | None):
        self._store = store
        self._previous = previous
        self._tables: tuple[PreviousRows, PreviousRows] | None = None

    def take(self, device_id: str) -> tuple[list[bytes], list[bytes]]:
        if self._previous is None:
            return [], []
        if self._tables is None:
            self._tables = tuple(PreviousRows(iter_lines(self._store, self._previous.table_keys(table)))
                                 for table in ("device_details", "device_apps"))
        details, apps = self._tables
        return details.take(device_id), apps.take(device_id)
