"""The committed-snapshots table: one JSON line per snapshot whose manifest exists.

Athena cannot see manifests (they are JSON documents, not rows), so every view and saved
query joins this table instead: a snapshot's rows are read only once its row is here.

Write order (the manifest stays the commit):

1. the collector writes the table parts, then the manifest: committed, the differ is triggered;
2. right after, the collector writes this row (`record_commit`);
3. the differ, started by the manifest's event, writes it too when it is missing: a run that
   died between 1 and 2 still gets its row, and the row never exists before the manifest.

Both writers derive the row from the manifest alone and write it with `create` (write once):
the same bytes whoever is first, and a second write changes nothing. `backfill` writes the
rows of snapshots committed before this table existed (an upgrade).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from typing import Any

from kandji_snapshots.snapshots.catalog import Manifest, committed_snapshot_ids, load_manifest
from kandji_snapshots.snapshots.layout import COMMITTED_PREFIX, committed_key
from kandji_snapshots.snapshots.storage import ObjectStore

logger = logging.getLogger(__name__)


def committed_row(manifest: Manifest) -> dict[str, Any]:
    """The table's row for a committed snapshot, from its manifest only (so every writer agrees)."""
    document = manifest.document
    return {  # the columns of schema.COMMITTED_SNAPSHOTS, in order
        "snapshot_id": manifest.snapshot_id,
        "committed_at": document.get("finished_at"),
        "previous_snapshot_id": document.get("previous_snapshot_id"),
        "device_count": document.get("device_count"),
        # Sorted: the collector's manifest and the one the differ loads (stored with sorted keys) give the
        # same bytes. A source read empty is listed (its answer is empty); one not read is not (unknown).
        "tenant_sources_read": manifest.tenant_tables_read(),
    }


def _body(manifest: Manifest) -> bytes:
    line = json.dumps(committed_row(manifest), sort_keys=False, separators=(",", ":")).encode() + b"\n"
    return gzip.compress(line, mtime=0)  # mtime 0: the same bytes from every writer


def record_commit(store: ObjectStore, manifest: Manifest) -> bool:
    """Write the snapshot's row once; False when it was already there. Only for a stored manifest."""
    return store.create(committed_key(manifest.snapshot_id), _body(manifest), content_type="application/x-ndjson")


def record_commit_or_log(store: ObjectStore, manifest: Manifest, *, writer: str) -> None:
    """`record_commit` that never fails the caller: its snapshot is committed whatever happens here,
    and the other writer (collector or differ) or `backfill` writes the row later."""
    try:
        record_commit(store, manifest)
    except Exception as error:
        logger.error(f"the committed-snapshots row of {manifest.snapshot_id} was not written by the {writer}: "
                     "Athena does not show this snapshot until it is (the differ writes it on a retry; or run "
                     "`kandji-snapshots backfill-committed`)",
                     extra={"snapshot_id": manifest.snapshot_id, "error": f"{type(error).__name__}: {error}"})


def backfill(store: ObjectStore, progress: Callable[[str], None] | None = None) -> list[str]:
    """Write the row of every committed snapshot that has none (snapshots taken before the upgrade).

    Idempotent: snapshots that have their row are left alone. Returns the ids it recorded.
    """
    recorded = {key.rsplit("/", 1)[-1].split(".", 1)[0] for key in store.list_keys(COMMITTED_PREFIX)}
    written = []
    for snapshot_id in committed_snapshot_ids(store):
        if snapshot_id in recorded:
            continue
        if record_commit(store, load_manifest(store, snapshot_id)):
            written.append(snapshot_id)
            if progress is not None:
                progress(snapshot_id)
    return written
