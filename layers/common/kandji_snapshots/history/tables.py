"""The columnar history: what each Parquet table holds, how it is laid out, and the Athena SQL that fills it.

One history table per snapshot table (`devices_history`, `device_details_history`, `device_apps_history`,
`device_posture_history`), with the source's columns: a posture question reads posture files only, never
app rows, and within a table Parquet reads only the columns (and struct fields) a query names.

Layout, chosen so that one device's history and "one device at time T" read little:

* partitioned by `dt` and `snapshot_id` (Glue partitions, registered by Athena's INSERT when it commits):
  a committed snapshot is copied by one INSERT per table into a partition of its own, so "the state at T"
  and "the current fleet" read one partition, a failed INSERT never shows (its partition is not
  registered; the next run deletes its orphaned files), and a copied snapshot is never copied twice;
* bucketed by `device_id` into BUCKET_COUNT files per partition (Hive bucketing, which Athena's INSERT
  writes and its planner prunes on `device_id = '...'`): one device's question reads one file in 16,
  whatever row-group size Athena's writer picks;
* sorted by `device_id` inside each file (the INSERT's ORDER BY), so a reader with smaller row groups
  (the DuckDB twin) also prunes by the row groups' min/max statistics.

The raw gzip JSON under snapshots/ stays the faithful record; the copy can be rebuilt from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kandji_snapshots.snapshots import schema
from kandji_snapshots.snapshots.schema import Type
from kandji_snapshots.snapshots.timeutil import partition_date

BUCKET_COUNT = 16
BUCKET_COLUMN = "device_id"
PARTITION_KEYS = ("dt", "snapshot_id")


@dataclass(frozen=True)
class HistoryTable:
    name: str  # the Glue table (Athena) and the DuckDB view (local twin)
    source: str  # the snapshot table it copies

    @property
    def columns(self) -> dict[str, Type]:
        """The source's columns, less snapshot_id (a partition key here)."""
        return {name: kind for name, kind in schema.TABLES[self.source].items() if name not in PARTITION_KEYS}

    def hive_columns(self) -> dict[str, str]:
        return {name: kind.hive() for name, kind in self.columns.items()}


HISTORY_TABLES: tuple[HistoryTable, ...] = tuple(HistoryTable(f"{source}_history", source) for source in schema.TABLES)


# JOIN POINT (issue 18 item 1): the copy reads committed snapshots only. Here that holds because the copier
# takes its snapshot ids from the manifests (history.copier) and Athena reads only the files the manifest
# lists ("$path"). When the `committed_snapshots` table lands, every copy also joins it, so the one
# committed-only mechanism covers this SQL too: set COMMITTED_JOIN to
#   "\nJOIN committed_snapshots c ON c.dt = t.dt AND c.snapshot_id = t.snapshot_id"
# and grant HistoryFunction's role glue:GetTable on that table and s3:GetObject on its files (Athena reads them
# with the role's rights): tests/test_iam_least_privilege.py names what is missing.
COMMITTED_JOIN = ""


def select_sql(table: HistoryTable, snapshot_id: str, source_files: Sequence[str] = ()) -> str:
    """The rows of one committed snapshot, in the history table's column order (partition keys last), sorted
    by device. `source_files` (s3:// URIs of the manifest's parts) restricts the files Athena opens: the
    rows are the same without it (they are that snapshot's), the bytes scanned are one snapshot's, not the
    whole day's."""
    columns = ",\n    ".join(f't."{name}"' for name in table.columns)
    where = [f"t.dt = '{partition_date(snapshot_id)}'", f"t.snapshot_id = '{snapshot_id}'"]
    if source_files:
        where.append('t."$path" IN (' + ", ".join(sql_literal(uri) for uri in source_files) + ")")
    return (f"SELECT\n    {columns},\n    t.dt,\n    t.snapshot_id\nFROM {table.source} t{COMMITTED_JOIN}\n"
            f"WHERE " + "\n  AND ".join(where) + f"\nORDER BY t.{BUCKET_COLUMN}")


def insert_sql(table: HistoryTable, snapshot_id: str, source_files: Sequence[str]) -> str:
    """Athena's INSERT that copies one committed snapshot into its own partition of `table`."""
    return f"INSERT INTO {table.name}\n{select_sql(table, snapshot_id, source_files)}"


def sql_literal(text: str) -> str:
    """`text` as an SQL string literal (quotes doubled), the same in Athena and DuckDB."""
    return "'" + text.replace("'", "''") + "'"
