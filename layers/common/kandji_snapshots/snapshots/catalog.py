"""Committed snapshots: a snapshot exists once, and only once, its manifest does."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.snapshots.layout import (
    MANIFEST_PREFIX,
    manifest_day_prefix,
    manifest_key,
    snapshot_id_from_manifest_key,
)
from kandji_snapshots.snapshots.storage import ObjectNotFound, ObjectStore
from kandji_snapshots.snapshots.timeutil import snapshot_time

MANIFEST_SCHEMA_VERSION = 1
# Days to look back one by one (today, yesterday) before listing every manifest (a paused schedule).
DAYS_TO_SCAN = 2

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Manifest:
    document: dict[str, Any]

    @property
    def snapshot_id(self) -> str:
        return self.document["snapshot_id"]

    def table_keys(self, table: str) -> list[str]:
        return list(self.document["tables"][table]["keys"])

    def table_rows(self, table: str) -> int:
        return int(self.document["tables"][table]["rows"])

    def tenant_table_keys(self, table: str) -> list[str] | None:
        """The keys of a tenant-wide table, or None when its source was not read in that run (unknown)."""
        tables = (self.document.get("tenant") or {}).get("tables") or {}
        return list(tables[table]["keys"]) if table in tables else None

    def tenant_tables_read(self) -> list[str]:
        """The tenant-wide tables whose source this run read (zero rows or more), sorted; the others are unknown."""
        return sorted((self.document.get("tenant") or {}).get("tables") or {})

    @property
    def skipped_device_ids(self) -> set[str]:
        """Devices listed but not read (404) and absent from the tables: unknown in this snapshot.

        A skipped device whose previous rows were carried (`carried: true`) is in the tables, as last known.
        """
        return {item["device_id"] for item in self.document.get("skipped_devices", []) if not item.get("carried")}

    def to_json(self) -> bytes:
        return json.dumps(self.document, indent=2, sort_keys=True).encode()


def write_manifest(store: ObjectStore, manifest: Manifest) -> str:
    key = manifest_key(manifest.snapshot_id)
    store.put(key, manifest.to_json(), content_type="application/json")
    return key


def load_manifest(store: ObjectStore, snapshot_id: str) -> Manifest:
    return load_manifest_key(store, manifest_key(snapshot_id))


class UnreadableManifest(KandjiSnapshotsError, ValueError):
    """A manifest this version cannot read: cut short, not JSON, or of another schema_version."""


def load_manifest_key(store: ObjectStore, key: str) -> Manifest:
    try:
        document = json.loads(store.get(key))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnreadableManifest(f"{key} is not a kandji-snapshots manifest: it is not JSON (cut short?): "
                                 f"{error}") from None
    if not isinstance(document, dict) or document.get("schema_version") != MANIFEST_SCHEMA_VERSION \
            or "tables" not in document:
        version = document.get("schema_version") if isinstance(document, dict) else None
        raise UnreadableManifest(f"{key} is not a kandji-snapshots manifest (schema_version {version!r})")
    return Manifest(document)


def previous_readable_snapshot_id(store: ObjectStore, snapshot_id: str) -> str | None:
    """The latest committed snapshot older than `snapshot_id` whose manifest this version can read.

    A manifest it cannot read (cut short, or written by a newer version) is passed over, with a warning
    that says which and what to do, so that one bad object does not stop every later run.
    """
    candidate = previous_snapshot_id(store, snapshot_id)
    while candidate is not None:
        try:
            load_manifest(store, candidate)
            return candidate
        except UnreadableManifest as error:
            logger.warning(f"snapshot {candidate} is passed over: {error}. If a newer kandji-snapshots wrote it, "
                           f"deploy that version again; if it was cut short, restore its earlier version from the "
                           f"bucket's noncurrent versions, or delete {manifest_key(candidate)} so the snapshot no "
                           "longer counts", extra={"snapshot_id": candidate, "manifest_key": manifest_key(candidate)})
        candidate = previous_snapshot_id(store, candidate)
    return None


def previous_snapshot_id(store: ObjectStore, snapshot_id: str) -> str | None:
    """The latest committed snapshot older than `snapshot_id`, or None for the first one."""
    day = snapshot_time(snapshot_id)
    for back in range(DAYS_TO_SCAN):
        candidates = _ids_in_prefix(store, manifest_day_prefix((day - timedelta(days=back)).strftime("%Y-%m-%d")))
        older = [candidate for candidate in candidates if candidate < snapshot_id]
        if older:
            return max(older)
    older = [candidate for candidate in _ids_in_prefix(store, MANIFEST_PREFIX) if candidate < snapshot_id]
    return max(older) if older else None


def committed_snapshot_ids(store: ObjectStore) -> list[str]:
    """Every committed snapshot, oldest first."""
    return sorted(_ids_in_prefix(store, MANIFEST_PREFIX))


def latest_snapshot_id(store: ObjectStore) -> str | None:
    ids = committed_snapshot_ids(store)
    return ids[-1] if ids else None


def _ids_in_prefix(store: ObjectStore, prefix: str) -> list[str]:
    ids = []
    for key in store.list_keys(prefix):
        snapshot_id = snapshot_id_from_manifest_key(key)
        if snapshot_id:
            ids.append(snapshot_id)
    return ids


def manifest_readable(store: ObjectStore, snapshot_id: str) -> bool:
    """Committed, and its manifest is one this version can read: a snapshot that counts."""
    try:
        load_manifest(store, snapshot_id)
    except (ObjectNotFound, UnreadableManifest):
        return False
    return True


def manifest_exists(store: ObjectStore, snapshot_id: str) -> bool:
    try:
        store.get(manifest_key(snapshot_id))
    except ObjectNotFound:
        return False
    return True
