"""The collector's domain: one complete snapshot of the fleet, committed by its manifest.

    list devices -> fetch details + apps per device (concurrently, in device_id order)
    -> normalize -> stream three tables to the store -> write the manifest last

If anything fails before the manifest is written, the parts already written are
deleted and the error propagates: a snapshot without its manifest does not exist,
and the differ never sees it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from . import __version__
from .catalog import MANIFEST_SCHEMA_VERSION, Manifest, write_manifest
from .errors import DeviceNotFound
from .layout import TABLE_NAMES
from .normalize import app_rows, details_row, device_row
from .snapshot_io import DEFAULT_ROWS_PER_PART, TableWriter
from .storage import ObjectStore
from .timeutil import format_timestamp, partition_date, snapshot_id_for, utc_now

logger = logging.getLogger(__name__)


class KandjiApi(Protocol):
    """What the collector needs from the Kandji adapter (`KandjiClient`, or a fake)."""

    host: str

    def list_devices(self) -> list[dict[str, Any]]: ...

    def device_details(self, device_id: str) -> dict[str, Any]: ...

    def device_apps(self, device_id: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class CollectorSettings:
    max_workers: int = 16  # requests in flight; the shared rate limiter sets the pace, not this
    rows_per_part: int = DEFAULT_ROWS_PER_PART


@dataclass(frozen=True)
class _Fetched:
    fetched_at: str
    details: dict[str, Any]
    apps: list[dict[str, Any]]


@dataclass(frozen=True)
class _Skipped:
    reason: str


class SnapshotCollector:
    def __init__(self, api: KandjiApi, store: ObjectStore, *, settings: CollectorSettings = CollectorSettings(),
                 clock: Callable[[], datetime] = utc_now, request_stats: Callable[[], dict[str, Any]] | None = None):
        self._api = api
        self._store = store
        self._settings = settings
        self._clock = clock
        self._request_stats = request_stats or (lambda: {})

    def collect(self, correlation_id: str | None = None) -> Manifest:
        started = self._clock()
        snapshot_id = snapshot_id_for(started)
        writers = {table: TableWriter(self._store, table, snapshot_id,
                                      rows_per_part=self._settings.rows_per_part) for table in TABLE_NAMES}
        try:
            devices = sorted(self._api.list_devices(), key=lambda device: str(device["device_id"]))
            logger.info("device list read", extra={"devices": len(devices), "snapshot_id": snapshot_id})
            skipped = self._write_tables(devices, snapshot_id, writers)
            tables = {table: writer.close() for table, writer in writers.items()}
            finished = self._clock()
            manifest = Manifest({
                "schema_version": MANIFEST_SCHEMA_VERSION,
                "snapshot_id": snapshot_id,
                "dt": partition_date(snapshot_id),
                "correlation_id": correlation_id,
                "started_at": format_timestamp(started),
                "finished_at": format_timestamp(finished),
                "duration_seconds": round((finished - started).total_seconds(), 3),
                "api_host": self._api.host,
                "collector_version": __version__,
                "device_count": tables["devices"]["rows"],
                "listed_devices": len(devices),
                "skipped_devices": skipped,
                "apps_source": "per-device",
                "refreshed_devices": tables["devices"]["rows"],
                "carried_devices": 0,
                "tables": tables,
                "requests": self._request_stats(),
            })
            write_manifest(self._store, manifest)  # the commit point
        except BaseException:
            self._discard(writers)
            raise
        logger.info("snapshot committed", extra={"snapshot_id": snapshot_id, "devices": manifest.document["device_count"],
                                                 "skipped": len(skipped)})
        return manifest

    def _write_tables(self, devices: list[dict[str, Any]], snapshot_id: str,
                      writers: dict[str, TableWriter]) -> list[dict[str, Any]]:
        skipped: list[dict[str, Any]] = []
        for device, outcome in self._fetch_in_order(devices):
            device_id = str(device["device_id"])
            if isinstance(outcome, _Skipped):
                skipped.append({"device_id": device_id, "serial_number": device.get("serial_number"),
                                "device_name": device.get("device_name"), "reason": outcome.reason})
                logger.warning("device skipped", extra={"device_id": device_id, "reason": outcome.reason})
                continue
            writers["devices"].write(device_row(device, snapshot_id))
            writers["device_details"].write(details_row(outcome.details, snapshot_id, device_id, outcome.fetched_at))
            for row in app_rows(outcome.apps, snapshot_id, device_id, outcome.fetched_at):
                writers["device_apps"].write(row)
        return skipped

    def _fetch(self, device_id: str) -> _Fetched | _Skipped:
        fetched_at = format_timestamp(self._clock())
        try:
            details = self._api.device_details(device_id)
            apps = self._api.device_apps(device_id)
        except DeviceNotFound as missing:
            return _Skipped(f"{missing.endpoint} answered 404: unenrolled during the run")
        return _Fetched(fetched_at, details, apps)

    def _fetch_in_order(self, devices: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], _Fetched | _Skipped]]:
        """Fetch concurrently but yield in list order, holding at most a small window in memory."""
        window = self._settings.max_workers * 4
        pending: deque[tuple[dict[str, Any], Future]] = deque()
        with ThreadPoolExecutor(max_workers=self._settings.max_workers, thread_name_prefix="kandji") as pool:
            try:
                for device in devices:
                    pending.append((device, pool.submit(self._fetch, str(device["device_id"]))))
                    if len(pending) >= window:
                        device_done, future = pending.popleft()
                        yield device_done, future.result()
                while pending:
                    device_done, future = pending.popleft()
                    yield device_done, future.result()
            finally:
                for _, future in pending:
                    future.cancel()

    def _discard(self, writers: dict[str, TableWriter]) -> None:
        """Best effort: remove the parts of a snapshot that will never be committed."""
        keys = [key for writer in writers.values() for key in writer.keys]
        if not keys:
            return
        try:
            self._store.delete(keys)
        except Exception:  # the original error matters more; orphans have no manifest anyway
            logger.warning("could not delete the parts of the failed snapshot", extra={"keys": len(keys)})
