"""The history copy's local twin: DuckDB builds the same Parquet tables from a local snapshot folder, and
answers the saved history questions from them.

    from kandji_snapshots.history import local_copy
    local_copy.build(folder)                                   # copies what is missing; returns what it copied
    rows = local_copy.run_history_query(folder, "device_posture_history", device_id=...)

Same rules as Athena's copy (history.copier): one copy per committed snapshot (ids from the manifests) and
table, the SELECT of history.tables (Athena's text, translated by sqlglot), partitions
`history/<table>/dt=.../snapshot_id=.../`, rows sorted by device_id. Each copy is written to a staging
folder and renamed into place, so a copy that fails leaves nothing a reader sees, and a partition that
exists is never copied again. Athena also splits each partition into 16 bucket files by device; the twin
writes one file with small row groups instead, whose min/max statistics prune as the buckets do
(bench/history_layout.py measures Athena's layout).

DuckDB and sqlglot are development dependencies, not part of the Lambda layer: imported only when used.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from kandji_snapshots.history.queries import HistoryQuery, history_query
from kandji_snapshots.history.tables import HISTORY_TABLES, PARTITION_KEYS, HistoryTable, select_sql, sql_literal
from kandji_snapshots.query import local_duckdb
from kandji_snapshots.snapshots.catalog import committed_snapshot_ids
from kandji_snapshots.snapshots.layout import HISTORY_PREFIX, history_partition_prefix, history_table_prefix
from kandji_snapshots.snapshots.storage import LocalObjectStore

ROW_GROUP_ROWS = 2048  # about one bucket's share (1/16) of a 20,000-device snapshot
STAGING = f"{HISTORY_PREFIX}_staging/"


def copy_sql(table: HistoryTable, snapshot_id: str, target: str | Path, *, row_group_rows: int = ROW_GROUP_ROWS,
             extra_partition: str | None = None) -> str:
    """DuckDB's COPY of one snapshot into `target` (hive partitions), from the same SELECT Athena runs.
    `extra_partition` (an SQL expression) splits each partition further: the benchmark's stand-in for
    Athena's bucket files."""
    select = local_duckdb.translate(select_sql(table, snapshot_id))
    keys = list(PARTITION_KEYS)
    if extra_partition:
        select = f"SELECT *, {extra_partition} AS bucket FROM ({select}) ORDER BY device_id"
        keys.append("bucket")
    return (f"COPY ({select}) TO {sql_literal(str(target))} (FORMAT parquet, PARTITION_BY ({', '.join(keys)}), "
            f"COMPRESSION zstd, ROW_GROUP_SIZE {row_group_rows}, OVERWRITE_OR_IGNORE)")


def build(root: str | Path, connection: Any = None, *, row_group_rows: int = ROW_GROUP_ROWS) -> list[str]:
    """Copy every committed snapshot of the folder not copied yet; returns "<table>/<snapshot_id>" copied."""
    root = Path(root)
    con = local_duckdb.connect(root, connection)
    copied = []
    for snapshot_id in committed_snapshot_ids(LocalObjectStore(root)):
        for table in HISTORY_TABLES:
            partition = root / history_partition_prefix(table.name, snapshot_id)
            if partition.is_dir():
                continue
            staging = root / STAGING / f"{table.name}-{snapshot_id}"
            shutil.rmtree(staging, ignore_errors=True)  # what an interrupted copy left
            staging.parent.mkdir(parents=True, exist_ok=True)
            con.execute(copy_sql(table, snapshot_id, staging, row_group_rows=row_group_rows))
            written = staging / partition.relative_to(root / history_table_prefix(table.name))
            partition.parent.mkdir(parents=True, exist_ok=True)
            if written.is_dir():
                written.rename(partition)  # one rename: the partition appears whole or not at all
            else:
                partition.mkdir()  # a table with no rows in that snapshot: copied, empty
            shutil.rmtree(staging, ignore_errors=True)
            copied.append(f"{table.name}/{snapshot_id}")
    return copied


def history_view_sql(root: str | Path, table: HistoryTable) -> str:
    """`CREATE VIEW <table>_history` over its Parquet files (partition keys as text, as in Athena)."""
    files = sorted((Path(root) / history_table_prefix(table.name)).glob("dt=*/snapshot_id=*/*.parquet"))
    if not files:
        columns = local_duckdb.duckdb_columns(table.source)
        selected = ", ".join(f"CAST(NULL AS {kind}) AS \"{name}\"" for name, kind in columns.items()
                             if name not in PARTITION_KEYS)
        keys = ", ".join(f"CAST(NULL AS VARCHAR) AS {key}" for key in PARTITION_KEYS)
        return f"CREATE OR REPLACE VIEW {table.name} AS SELECT {selected}, {keys} WHERE false"
    file_list = "[" + ", ".join(sql_literal(path.as_posix()) for path in files) + "]"
    hive_types = "{" + ", ".join(f"{sql_literal(key)}: 'VARCHAR'" for key in PARTITION_KEYS) + "}"
    return (f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM read_parquet({file_list}, "
            f"hive_partitioning = true, hive_types = {hive_types})")


def connect(root: str | Path, connection: Any = None) -> Any:
    """A DuckDB connection with the snapshot views (local_duckdb) and the four history views."""
    con = local_duckdb.connect(root, connection)
    for table in HISTORY_TABLES:
        con.execute(history_view_sql(root, table))
    return con


def run_history_query(root_or_connection: Any, query: str | HistoryQuery, **values: str) -> list[dict[str, Any]]:
    """One saved history question (Athena's text, translated) over a folder or an open connection."""
    query = history_query(query) if isinstance(query, str) else query
    con = connect(root_or_connection) if isinstance(root_or_connection, (str, Path)) else root_or_connection
    return local_duckdb.query_rows(con, local_duckdb.translate(query.sql(**values)))
