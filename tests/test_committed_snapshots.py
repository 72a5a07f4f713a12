"""The committed-snapshots table: written after the manifest by the collector, ensured by the differ, backfilled."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from local_pipeline import TOKEN, collect_with_simulator

from kandji_snapshots.cli.main import main
from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.diff.publisher import MemoryPublisher
from kandji_snapshots.snapshots import committed, schema
from kandji_snapshots.snapshots.catalog import Manifest, load_manifest, write_manifest
from kandji_snapshots.snapshots.layout import committed_key
from kandji_snapshots.snapshots.storage import LocalObjectStore, MemoryObjectStore
from simulator import Fleet, KandjiSimulator


def manifest(snapshot_id: str, previous: str | None = None) -> Manifest:
    # The tenant tables in the collector's order (collect/tenant_sources.SOURCE_NAMES), not sorted: detections
    # were read and empty, vulnerabilities forbidden (no table).
    tenant = {"sources": {"audit_events": {"status": "read"}, "threats": {"status": "read", "rows": 2},
                          "vulnerability_detections": {"status": "read", "rows": 0},
                          "vulnerabilities": {"status": "forbidden"}, "users": {"status": "read", "rows": 1}},
              "tables": {"audit_events": {"rows": 0, "keys": []}, "threats": {"rows": 2, "keys": ["t"]},
                         "vulnerability_detections": {"rows": 0, "keys": ["v"]}, "users": {"rows": 1, "keys": ["u"]}}}
    return Manifest({"schema_version": 1, "snapshot_id": snapshot_id, "finished_at": "2026-11-23T10:16:02.5Z",
                     "previous_snapshot_id": previous, "device_count": 7, "tables": {}, "tenant": tenant})


def is_recorded(store, snapshot_id: str) -> bool:
    return committed_key(snapshot_id) in set(store.list_keys(committed_key(snapshot_id)))


def rows(store, snapshot_id: str) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(store.get(committed_key(snapshot_id))).splitlines()]


def test_the_row_comes_from_the_manifest_alone_and_is_written_once() -> None:
    store = MemoryObjectStore()
    first = manifest("20261123T101500Z", previous="20261123T091500Z")
    assert committed.record_commit(store, first) is True
    body = store.get(committed_key(first.snapshot_id))
    assert rows(store, first.snapshot_id) == [{"snapshot_id": "20261123T101500Z",
                                               "committed_at": "2026-11-23T10:16:02.5Z",
                                               "previous_snapshot_id": "20261123T091500Z", "device_count": 7,
                                               "tenant_sources_read": ["audit_events", "threats", "users",
                                                                       "vulnerability_detections"]}]
    assert list(rows(store, first.snapshot_id)[0]) == list(schema.COMMITTED_SNAPSHOTS)
    # The other writer (the differ) computes the same bytes from the stored manifest, and writes nothing.
    other = MemoryObjectStore()
    write_manifest(other, first)
    assert committed.record_commit(other, load_manifest(other, first.snapshot_id)) is True
    assert other.get(committed_key(first.snapshot_id)) == body
    assert committed.record_commit(store, first) is False
    assert store.get(committed_key(first.snapshot_id)) == body
    # A run that read no tenant source (KANDJI_TENANT_SOURCES=none: no tenant section) lists none.
    devices_only = Manifest({key: value for key, value in first.document.items() if key != "tenant"})
    assert committed.committed_row(devices_only)["tenant_sources_read"] == []


def test_backfill_records_every_committed_snapshot_without_a_row(tmp_path: Path, capsys) -> None:
    store = LocalObjectStore(tmp_path)
    ids = ["20261121T101500Z", "20261122T101500Z", "20261123T101500Z"]
    for snapshot_id in ids:
        write_manifest(store, manifest(snapshot_id))
    committed.record_commit(store, manifest(ids[1]))
    # Parts of a run that never committed (no manifest) get no row.
    store.put("snapshots/devices/dt=2026-11-24/20261124T101500Z.json.gz", gzip.compress(b"{}\n"))
    assert main(["backfill-committed", str(tmp_path)]) == 0
    assert "2 committed snapshots recorded" in capsys.readouterr().out
    assert [is_recorded(store, snapshot_id) for snapshot_id in ids] == [True, True, True]
    assert not is_recorded(store, "20261124T101500Z")
    assert committed.backfill(store) == []  # again: nothing to do


class RefusingStore(LocalObjectStore):
    """A store that refuses the committed row (as if the run died right after its manifest)."""

    def create(self, key: str, body: bytes, *, content_type: str = "application/json") -> bool:
        if "committed_snapshots" in key:
            raise OSError("the Lambda was killed")
        return super().create(key, body, content_type=content_type)


def test_a_row_the_collector_did_not_write_is_written_by_the_differ(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    fleet = Fleet.generate(6, seed=5)
    with KandjiSimulator(fleet, token=TOKEN, rate_limit_per_hour=None) as sim:
        written = collect_with_simulator(sim, LocalObjectStore(tmp_path), now - timedelta(minutes=2))
        assert is_recorded(LocalObjectStore(tmp_path), written.snapshot_id)  # the collector's own row
        snapshot = collect_with_simulator(sim, RefusingStore(tmp_path), now - timedelta(minutes=1))
    store = LocalObjectStore(tmp_path)
    assert not is_recorded(store, snapshot.snapshot_id), "the commit stands without its row"
    SnapshotDiffer(store, MemoryPublisher()).run(snapshot.snapshot_id)
    assert rows(store, snapshot.snapshot_id)[0]["snapshot_id"] == snapshot.snapshot_id
