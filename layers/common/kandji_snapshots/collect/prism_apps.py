"""Fleet-wide apps from Prism: one request per page of app rows (up to 300) instead of one per device.

Prism pages are in Prism's order, not by device; the snapshot wants apps grouped
and sorted by device without holding the fleet's apps in memory. So the rows go
through a small on-disk sort (SQLite in a temporary file, standard library) and
come back out one device at a time, in device order.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from typing import Any

from kandji_snapshots.snapshots.device_groups import DeviceGroups

# Prism rows carry the device's columns too (the devices table has them): left out of app rows.
_DEVICE_COLUMNS = frozenset({"device_id", "blueprint_id", "blueprint_name", "serial_number", "model_id",
                             "asset_tag", "tags", "device_name", "platform", "user", "user_email", "user_name",
                             "model", "os_version"})
# Prism's name for a column -> the per-device endpoint's. `obtained_from` is the source
# ("Identified Developer", "App Store"...), `executable` the process; `created_at`/`updated_at`
# are inventory times, as the per-device creation/modification dates are.
_RENAMED = {"name": "app_name", "obtained_from": "source", "executable": "process",
            "created_at": "creation_date", "updated_at": "modification_date"}
# Prism's own bookkeeping (when its collector last saw the row): the snapshot has fetched_at.
_BOOKKEEPING = frozenset({"last_collected_at"})
# Copies of a mapped column, kept (in `extra`) only when they say something else.
_COPIES = {"short_version": "version", "bundle_name": "name"}


def prism_row_to_app(row: dict[str, Any]) -> dict[str, Any]:
    """A Prism row as the per-device endpoint would have served the app.

    Prism has no app_id, bundle_size or VPP fields: those columns stay null. Any other key
    (category, developer_name, ...) is kept and lands in the row's `extra`.
    """
    app: dict[str, Any] = {}
    for key, value in row.items():
        if key in _DEVICE_COLUMNS or key.startswith("device__") or key in _BOOKKEEPING:
            continue
        if key in _COPIES and value == row.get(_COPIES[key]):
            continue
        app[_RENAMED.get(key, key)] = value
    return app


class PrismAppsIndex:
    """Apps by device, read back in device order; memory stays flat however many rows."""

    def __init__(self, directory: str | None = None):
        import sqlite3  # only runs that read apps from Prism need it: not imported at every cold start

        handle, self._path = tempfile.mkstemp(prefix="prism-apps-", suffix=".sqlite", dir=directory)
        os.close(handle)
        self._db = sqlite3.connect(self._path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE apps (device_id TEXT NOT NULL, app TEXT NOT NULL)")
        self.rows = 0
        self._by_device: DeviceGroups[tuple[str, str]] | None = None

    def load(self, rows: Iterable[dict[str, Any]]) -> None:
        batch = []
        for row in rows:
            batch.append((str(row["device_id"]), json.dumps(prism_row_to_app(row))))
            if len(batch) >= 5_000:
                self._insert(batch)
                batch = []
        self._insert(batch)
        self._db.execute("CREATE INDEX apps_by_device ON apps (device_id)")

    def _insert(self, batch: list[tuple[str, str]]) -> None:
        self._db.executemany("INSERT INTO apps VALUES (?, ?)", batch)
        self.rows += len(batch)

    def take(self, device_id: str) -> list[dict[str, Any]]:
        """The apps of `device_id`; devices must be asked for in ascending order."""
        if self._by_device is None:
            rows = self._db.execute("SELECT device_id, app FROM apps ORDER BY device_id, rowid")
            self._by_device = DeviceGroups(rows, lambda row: row[0])
        return [json.loads(app) for _, app in self._by_device.take(device_id)]

    def close(self) -> None:
        self._db.close()
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "PrismAppsIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
