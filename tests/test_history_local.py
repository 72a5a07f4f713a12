"""The history copy's DuckDB twin on data the handlers wrote (tests/test_schema_guard.run_pipeline: two
snapshots of a simulated fleet, FileVault turned off on a Mac in between): it copies committed snapshots
only, each once, sorted by device, and answers the saved history questions (Athena's text, translated)."""

from __future__ import annotations

import gzip
import random
import shutil
from datetime import timedelta
from typing import Any

import pytest
from local_pipeline import Pipeline, run_pipeline

from kandji_snapshots.history import local_copy
from kandji_snapshots.history.queries import HISTORY_QUERIES
from kandji_snapshots.history.tables import HISTORY_TABLES
from kandji_snapshots.snapshots.layout import history_partition_prefix, table_part_key
from kandji_snapshots.snapshots.timeutil import snapshot_id_for, snapshot_time

DEVICES = 240  # enough app rows per snapshot for several row groups (DuckDB cuts them at 2,048 rows at least)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    pipeline = run_pipeline(tmp_path_factory.mktemp("history"), count=DEVICES)
    # A run killed after writing its parts, 30 minutes after the last one: the newest snapshot, uncommitted.
    killed = snapshot_id_for(snapshot_time(pipeline.second.snapshot_id) + timedelta(minutes=30))
    for table in ("devices", "device_details", "device_apps", "device_posture"):
        lines = gzip.decompress((pipeline.root / pipeline.second.table_keys(table)[0]).read_bytes())
        target = pipeline.root / table_part_key(table, killed, 0)
        target.write_bytes(gzip.compress(lines.replace(pipeline.second.snapshot_id.encode(), killed.encode())))
    pipeline.killed = killed
    # The collector writes devices in id order; a snapshot in several parts, read in parallel, comes in any
    # order: the copy must sort it. Shuffle the first snapshot's app rows (same rows, another order).
    for key in pipeline.first.table_keys("device_apps"):
        lines = gzip.decompress((pipeline.root / key).read_bytes()).splitlines(keepends=True)
        random.Random(5).shuffle(lines)
        (pipeline.root / key).write_bytes(gzip.compress(b"".join(lines)))
    return pipeline


@pytest.fixture(scope="module")
def built(pipeline: Pipeline) -> list[str]:
    return local_copy.build(pipeline.root, row_group_rows=2048)


@pytest.fixture(scope="module")
def con(pipeline: Pipeline, built: list[str]) -> Any:
    return local_copy.connect(pipeline.root)


def test_each_committed_snapshot_is_copied_into_each_table_with_all_its_rows(pipeline, built, con):
    snapshots = [pipeline.first, pipeline.second]
    assert sorted(built) == sorted(f"{t.name}/{m.snapshot_id}" for t in HISTORY_TABLES for m in snapshots)
    for table in HISTORY_TABLES:
        counts = dict(con.execute(f"SELECT snapshot_id, count(*) FROM {table.name} GROUP BY 1").fetchall())
        assert counts == {m.snapshot_id: m.table_rows(table.source) for m in snapshots}, table.name
        assert not (pipeline.root / history_partition_prefix(table.name, pipeline.killed)).exists()


def test_the_copy_holds_the_same_rows_as_the_snapshot(pipeline, con):
    for table in HISTORY_TABLES:
        columns = ", ".join(f'"{name}"' for name in table.columns)
        raw = con.execute(f"SELECT {columns}, dt, snapshot_id FROM {table.source} "
                          f"WHERE snapshot_id <> '{pipeline.killed}' EXCEPT ALL "
                          f"SELECT {columns}, dt, snapshot_id FROM {table.name}").fetchall()
        assert raw == [], table.name


def test_building_again_copies_nothing_and_duplicates_nothing(pipeline, built, con):
    assert local_copy.build(pipeline.root) == []
    again = local_copy.connect(pipeline.root)
    for table in HISTORY_TABLES:
        assert again.execute(f"SELECT count(*) FROM {table.name}").fetchone() == \
            con.execute(f"SELECT count(*) FROM {table.name}").fetchone()


def test_an_interrupted_copy_shows_nothing_and_the_next_build_finishes_it(pipeline, built, tmp_path):
    import duckdb

    root = tmp_path / "copy"
    shutil.copytree(pipeline.root, root, ignore=shutil.ignore_patterns("history"))
    second_apps = f"device_apps_history-{pipeline.second.snapshot_id}"

    class KilledAfterWriting:
        """DuckDB, killed right after it wrote the second snapshot's apps (before the copy is in place)."""

        def __init__(self):
            self.con = duckdb.connect()

        def execute(self, sql, *args):
            result = self.con.execute(sql, *args)
            if sql.startswith("COPY") and second_apps in sql:
                raise KeyboardInterrupt("killed mid-copy")
            return result

    with pytest.raises(KeyboardInterrupt):
        local_copy.build(root, KilledAfterWriting())
    assert any((root / "history" / "_staging").rglob("*.parquet"))  # written, but not where readers look
    assert not (root / history_partition_prefix("device_apps_history", pipeline.second.snapshot_id)).exists()
    assert local_copy.connect(root).execute("SELECT count(*) FROM device_apps_history").fetchone()[0] == \
        pipeline.first.table_rows("device_apps")
    assert local_copy.build(root) == [f"device_apps_history/{pipeline.second.snapshot_id}",
                                      f"device_posture_history/{pipeline.second.snapshot_id}"]
    assert local_copy.connect(root).execute("SELECT count(*) FROM device_apps_history").fetchone()[0] == \
        pipeline.first.table_rows("device_apps") + pipeline.second.table_rows("device_apps")


def test_rows_are_sorted_by_device_so_row_group_statistics_prune(pipeline, con):
    stats = con.execute(f"""
        SELECT file_name, row_group_id, stats_min, stats_max
        FROM parquet_metadata('{(pipeline.root / 'history' / 'device_apps_history').as_posix()}/*/*/*.parquet')
        WHERE path_in_schema = 'device_id' ORDER BY file_name, row_group_id""").fetchall()
    assert len(stats) >= 2 * 2  # several row groups in each of the two partitions
    by_file: dict[str, list[tuple[str, str]]] = {}
    for file_name, _, low, high in stats:
        by_file.setdefault(file_name, []).append((low, high))
    for groups in by_file.values():
        for (_, high), (next_low, _) in zip(groups, groups[1:]):
            assert high <= next_low  # a device's rows sit in one row group (or two neighbours), never all of them


def test_filevault_history_shows_the_mac_turned_off(pipeline, con):
    device_id = pipeline.demo["filevault_disabled"]["device_id"]
    rows = local_copy.run_history_query(con, "device_posture_history", device_id=device_id)
    assert [(row["snapshot_id"], row["filevault_on"]) for row in rows] == [
        (pipeline.first.snapshot_id, True), (pipeline.second.snapshot_id, False)]
    steady = next(d for d in pipeline.fleet.device_ids() if pipeline.fleet.platform(d) == "Mac"
                  and d != device_id and d != pipeline.agent_removed)
    rows = local_copy.run_history_query(con, "device_posture_history", device_id=steady)
    assert [row["snapshot_id"] for row in rows] == [pipeline.first.snapshot_id]  # no change: the first reading only


def test_one_device_at_time_t_is_the_snapshot_in_force_then(pipeline, con):
    device_id = pipeline.demo["filevault_disabled"]["device_id"]
    between = snapshot_time(pipeline.second.snapshot_id) - timedelta(seconds=1)
    after = snapshot_time(pipeline.killed) + timedelta(minutes=5)  # the killed run is not in force
    for at, snapshot, filevault in ((between, pipeline.first, True), (after, pipeline.second, False)):
        [row] = local_copy.run_history_query(con, "device_at_time", device_id=device_id,
                                             at=at.strftime("%Y-%m-%d %H:%M:%S"))
        assert (row["snapshot_id"], row["filevault_on"], row["details_filevault_enabled"]) == \
            (snapshot.snapshot_id, filevault, filevault)
        assert row["serial_number"] == pipeline.fleet.list_item(device_id)["serial_number"]
        assert row["app_count"] == pipeline.fleet.app_count(device_id)
    before_first = snapshot_time(pipeline.first.snapshot_id) - timedelta(seconds=1)
    assert local_copy.run_history_query(con, "device_at_time", device_id=device_id,
                                        at=before_first.strftime("%Y-%m-%d %H:%M:%S")) == []


@pytest.mark.parametrize("query", HISTORY_QUERIES, ids=lambda query: query.name)
def test_every_saved_history_query_parses_as_athena_sql(query):
    import sqlglot

    assert sqlglot.parse_one(query.athena_sql, read="athena") is not None
    assert "device_id = '00000000-0000-0000-0000-000000000000'" in query.athena_sql


@pytest.mark.parametrize("table", HISTORY_TABLES, ids=lambda table: table.name)
def test_every_copy_statement_parses_as_athena_sql(table):
    import sqlglot
    from sqlglot import exp

    from kandji_snapshots.history.tables import insert_sql

    parsed = sqlglot.parse_one(insert_sql(table, "20261123T100000Z", ["s3://bucket/snapshots/x.json.gz"]),
                               read="athena")
    assert isinstance(parsed, exp.Insert) and parsed.this.name == table.name
