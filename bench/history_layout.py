"""History within the scan cap: the bytes a history question makes Athena read, BEFORE (the raw gzip JSON
under snapshots/, all a query can scan today) and AFTER (the Parquet history copy), at 20,000 devices,
one snapshot an hour, a year kept.

How the figures are made (nothing is timed; every AFTER byte comes from the Parquet files' own metadata):

1. The real collector snapshots a simulated fleet of --sample devices (in-process simulator) into a
   folder: the raw gzip JSON as the handlers write it. BEFORE bytes = those files' bytes per device, times
   --devices, times the snapshots a query's `dt` filter lets through (JSON cannot be pruned further).
2. DuckDB makes one day of a --devices fleet from those rows: each sample device repeated under new ids
   (and serials, names), --hours snapshots whose changing fields change (fetched_at, check-ins, Prism's
   reported-at times).
3. Every snapshot is copied with the copy's own SELECT (history.tables.select_sql, Athena's text through
   sqlglot) into Parquet laid out as Athena writes the history tables: partitions dt=/snapshot_id=, each
   split into 16 files by device_id (Athena's buckets; here DuckDB's hash stands in for Hive's), one row group
   per file (Athena's writer cuts row groups at 128 MB, more than a bucket file holds), zstd.
4. A reader with partition and bucket pruning opens, per partition it needs, the bucket file of the device
   (or all 16 for a fleet question) and reads the column chunks the query names, plus each file's footer.
   Those bytes are summed from parquet_metadata(). One day is measured; 90 days and a year are that day
   times 90 and 365 (every day of the fleet looks alike: same devices, same hourly churn).

The simulator's detail rows are smaller than a real tenant's (the issue measured about 0.7 GB of details a
day at 20,000 devices; the simulator gives less): both sides scale alike, the ratio holds.

    nice .venv/bin/python bench/history_layout.py [--devices 20000 --hours 24 --sample 500]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common import PRISM_PAGE_ROWS, TOKEN, HourlyClock, collector

from kandji_snapshots.history import local_copy
from kandji_snapshots.history.queries import HISTORY_QUERIES
from kandji_snapshots.history.tables import BUCKET_COUNT, HISTORY_TABLES
from kandji_snapshots.query import athena_sql, local_duckdb
from kandji_snapshots.snapshots.schema import POSTURE_CATEGORY_COLUMNS
from kandji_snapshots.snapshots.storage import LocalObjectStore
from kandji_snapshots.snapshots.timeutil import partition_date, snapshot_id_for

MB = 1_000_000
GIB = 1024 ** 3
CAP = 10 * GIB  # the workgroup's BytesScannedCutoffPerQuery default
DAY = datetime(2026, 11, 23, tzinfo=timezone.utc)
SOURCES = ("devices", "device_details", "device_apps", "device_posture")
POSTURE_CATEGORIES = tuple(POSTURE_CATEGORY_COLUMNS)
# Columns each question names (path_in_schema prefixes: a struct's name covers all its fields).
AT_TIME_COLUMNS = None  # None: every column (the whole state of the device)
HISTORY_COLUMNS = ("device_id", "filevault, status", "filevault, last_collected_at", "application_firewall, status",
                   "application_firewall, last_collected_at")
DETAILS_HISTORY_COLUMNS = ("device_id", "general, os_version", "filevault, filevault_enabled")
FLEET_POSTURE = {"device_posture_history": None,
                 "devices_history": ("device_id", "device_name", "serial_number", "platform", "user, email",
                                     "blueprint_name")}


def sample_snapshot(folder: Path, devices: int) -> tuple[dict[str, float], str]:
    """The collector's snapshot of a simulated fleet: raw gzip bytes per device of each table, and its id."""
    from simulator import Fleet, KandjiSimulator

    with KandjiSimulator(Fleet.generate(devices, seed=3), token=TOKEN, rate_limit_per_hour=None,
                         prism_page_rows=PRISM_PAGE_ROWS) as sim:
        run = collector(sim.api_url, LocalObjectStore(folder), requests_per_second=1000, budget=None,
                        clock=HourlyClock(DAY))
        manifest = run.collector.collect()
    per_device = {table: sum((folder / key).stat().st_size for key in manifest.table_keys(table)) / devices
                  for table in SOURCES}
    return per_device, manifest.snapshot_id


def synthesize_fleet(con, copies: int) -> None:
    """fleet_<table>: the sample's rows repeated `copies` times under new device ids, serials and names."""
    new_id = "md5(t.device_id || c)::uuid::varchar"
    replaced = {
        "devices": f"{new_id} AS device_id, t.device_name || ' ' || c AS device_name, "
                   "upper(substr(md5(t.serial_number || c), 1, 10)) AS serial_number",
        "device_details": f"{new_id} AS device_id",
        "device_apps": f"{new_id} AS device_id",
        "device_posture": f"{new_id} AS device_id",
    }
    for table in SOURCES:
        con.execute(f"CREATE OR REPLACE TABLE fleet_{table} AS SELECT t.* REPLACE ({replaced[table]}), c AS copy "
                    f"FROM {table} t, range({copies}) r(c)")


def point_views_at_hour(con, hour: int) -> str:
    """Views named like the snapshot tables, showing the fleet as the snapshot of `hour` (the fields that
    change every run changed); returns that snapshot's id."""
    moment = DAY + timedelta(hours=hour)
    snapshot_id = snapshot_id_for(moment)
    at = f"TIMESTAMP '{moment:%Y-%m-%d %H:%M:%S}' + to_seconds(t.copy * 37 % 3000)"
    text = f"strftime({at}, '%Y-%m-%dT%H:%M:%S.%fZ')"
    common = f"'{snapshot_id}' AS snapshot_id, '{partition_date(snapshot_id)}' AS dt"
    posture = ", ".join(f"CASE WHEN t.{c} IS NULL THEN NULL ELSE struct_update(t.{c}, last_collected_at := {text}) END "
                        f"AS {c}" for c in POSTURE_CATEGORIES)
    replaced = {
        "devices": f"{common}, {text} AS last_check_in",
        "device_details": f"{common}, {text} AS fetched_at, struct_update(t.mdm, last_check_in := {text}) AS mdm, "
                          f"struct_update(t.kandji_agent, last_check_in := {text}) AS kandji_agent",
        "device_apps": f"{common}, {text} AS fetched_at",
        "device_posture": f"{common}, {text} AS fetched_at, {posture}",
    }
    for table in SOURCES:
        con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT t.* EXCLUDE (copy) REPLACE ({replaced[table]}) "
                    f"FROM fleet_{table} t")
    return snapshot_id


def copy_day(con, out: Path, hours: int) -> list[str]:
    """Each hour's snapshot copied into every history table, as Athena lays them out; the snapshot ids."""
    snapshot_ids = []
    out.mkdir(parents=True, exist_ok=True)
    for hour in range(hours):
        snapshot_id = point_views_at_hour(con, hour)
        for table in HISTORY_TABLES:
            con.execute(local_copy.copy_sql(table, snapshot_id, out / table.name, row_group_rows=10_000_000,
                                            extra_partition=f"hash(device_id) % {BUCKET_COUNT}"))
        snapshot_ids.append(snapshot_id)
    return snapshot_ids


def bucket_file_of(path: str) -> tuple[str, str, int]:
    """(history table, snapshot id, bucket) of a Parquet file the benchmark wrote."""
    table, snapshot_id, bucket = re.search(r"/(\w+)/dt=[^/]+/snapshot_id=(\w+)/bucket=(\d+)/", path).groups()
    return table, snapshot_id, int(bucket)


class ParquetBytes:
    """Column-chunk bytes per (table, snapshot, bucket file), from parquet_metadata, plus each file's footer."""

    def __init__(self, con, out: Path):
        rows = con.execute(f"""
            SELECT file_name, path_in_schema, sum(total_compressed_size)
            FROM parquet_metadata('{out.as_posix()}/*/*/*/*/*.parquet') GROUP BY ALL""").fetchall()
        self.chunks: dict[tuple[str, str, int], dict[str, int]] = {}
        for file_name, column, size in rows:
            self.chunks.setdefault(bucket_file_of(file_name), {})[column] = int(size)
        self.footer = {key: 0 for key in self.chunks}
        for path in out.rglob("*.parquet"):
            key = bucket_file_of(path.as_posix())
            self.footer[key] = path.stat().st_size - sum(self.chunks[key].values())  # footer, magic, headers

    def read(self, table: str, snapshot_ids, buckets, columns=None) -> int:
        """What a reader of `columns` (None: all) opens in those partitions' bucket files."""
        total = 0
        for snapshot_id in snapshot_ids:
            for bucket in buckets:
                key = (table, snapshot_id, bucket)
                if key not in self.chunks:
                    continue
                chunks = self.chunks[key]
                total += self.footer[key] + sum(size for column, size in chunks.items()
                                                if columns is None or any(column == c or column.startswith(c + ", ")
                                                                          for c in columns))
        return total

    def day_bytes(self, table: str, snapshot_ids) -> int:
        return self.read(table, snapshot_ids, range(BUCKET_COUNT))


def raw_reads_of(query_sql: str) -> list[str]:
    """The snapshot tables a saved query reads, once per reference (Athena scans each reference)."""
    return re.findall(r"\b(?:FROM|JOIN)\s+(devices|device_details|device_apps|device_posture)\b", query_sql)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--hours", type=int, default=24, help="snapshots generated (one day: 24)")
    parser.add_argument("--sample", type=int, default=500, help="devices the simulator serves and the collector reads")
    args = parser.parse_args()
    copies = max(1, round(args.devices / args.sample))
    devices = copies * args.sample
    per_day = 24  # the figures are for hourly snapshots, whatever --hours generated
    scale = per_day / args.hours  # a day's bytes from the hours generated

    import duckdb

    with tempfile.TemporaryDirectory(prefix="history-layout-") as folder:
        root = Path(folder)
        raw_per_device, _ = sample_snapshot(root / "raw", args.sample)
        raw_snapshot = {table: raw_per_device[table] * devices for table in SOURCES}  # one snapshot, gzip JSON
        con = duckdb.connect()
        local_duckdb.connect(root / "raw", con)
        synthesize_fleet(con, copies)
        snapshot_ids = copy_day(con, root / "history", args.hours)
        meta = ParquetBytes(con, root / "history")

        device_id = con.execute("SELECT device_id FROM fleet_device_posture WHERE filevault.status IS NOT NULL "
                                "ORDER BY device_id LIMIT 1").fetchone()[0]
        bucket = con.execute(f"SELECT hash('{device_id}') % {BUCKET_COUNT}").fetchone()[0]
        latest, today = snapshot_ids[-1], snapshot_ids
        name = {table.source: table.name for table in HISTORY_TABLES}

        # --- AFTER: the Parquet copy -------------------------------------------------------------------
        # The snapshot in force at T: device_id of the device's bucket in T's day and the day before.
        at_snapshot = meta.read(name["device_posture"], today, [bucket], ("device_id",)) * 2 * scale
        at_state = sum(meta.read(name[t], [latest], [bucket], AT_TIME_COLUMNS) for t in SOURCES)
        after_at = at_snapshot + at_state
        after_history_day = meta.read(name["device_posture"], today, [bucket], HISTORY_COLUMNS) * scale
        after_history = after_history_day * 90
        after_details_history = meta.read(name["device_details"], today, [bucket], DETAILS_HISTORY_COLUMNS) * scale * 90
        after_fleet = sum(meta.read(t, [latest], range(BUCKET_COUNT), columns) for t, columns in FLEET_POSTURE.items())
        day_parquet = {t: meta.day_bytes(name[t], today) * scale for t in SOURCES}

        # --- BEFORE: the raw gzip JSON a dt filter lets through --------------------------------------
        raw_day = {table: raw_snapshot[table] * per_day for table in SOURCES}
        before_at = sum(raw_day.values())  # T's day of every table (the JSON of one dt partition, all of it)
        before_history = raw_day["device_posture"] * 90
        before_details_history = raw_day["device_details"] * 90
        before_fleet = 3 * (2 * raw_day["devices"] + raw_day["device_posture"])  # firewall_off's 3-day window
        goals = (("one device at time T", before_at, after_at, 50 * MB),
                 ("one device's 90-day FileVault/firewall history", before_history, after_history, 200 * MB),
                 ("the current fleet's posture", before_fleet, after_fleet, 20 * MB),
                 ("one device's 90-day OS/FileVault from details", before_details_history, after_details_history,
                  CAP))

    print(f"\n{devices:,} devices, hourly snapshots ({args.hours} generated, scaled to 24 a day), "
          f"a year kept; sample of {args.sample} devices from the simulator")
    print("  raw gzip JSON per snapshot: " + ", ".join(f"{t} {raw_snapshot[t] / MB:.1f} MB" for t in SOURCES))
    print("  Parquet per day (16 bucket files per snapshot): "
          + ", ".join(f"{t} {day_parquet[t] / MB:.1f} MB" for t in SOURCES))
    print(f"  a year: raw {sum(raw_day.values()) * 365 / GIB:.0f} GiB, Parquet copy "
          f"{sum(day_parquet.values()) * 365 / GIB:.0f} GiB\n")
    print(f"  {'question':<48} {'BEFORE (raw JSON)':>18} {'AFTER (Parquet)':>16} {'goal':>9}  met")
    for label, before, after, goal in goals:
        cap = " (BEFORE over the cap)" if before > CAP else ""
        print(f"  {label:<48} {before / MB:>15,.1f} MB {after / MB:>13,.2f} MB {goal / MB:>6,.0f} MB  "
              f"{'yes' if after <= goal else 'NO'}{cap}")

    print(f"\n  saved queries against the workgroup's cap ({CAP / GIB:.0f} GiB), at the end of a day:")
    print(f"  {'query':<56} {'reads':>12}  under cap")
    for query in athena_sql.QUERIES:
        tables = raw_reads_of(query.athena_sql)
        if not tables:
            continue  # changes/ only: the differ's events, kilobytes a run
        scanned = sum(3 * raw_day[table] for table in tables)  # the 3-day window of the latest snapshot
        print(f"  {query.title[:56]:<56} {scanned / GIB:>8.2f} GiB  {'yes' if scanned <= CAP else 'NO'}")
    history_reads = {"device_posture_history": after_history, "device_at_time": after_at}
    for query in HISTORY_QUERIES:
        scanned = history_reads[query.name]
        print(f"  {query.title[:56]:<56} {scanned / GIB:>8.3f} GiB  {'yes' if scanned <= CAP else 'NO'}")
    biggest = max(SOURCES, key=lambda table: raw_snapshot[table])
    print(f"  {'the copy of one snapshot (INSERT, largest: ' + biggest + ')':<56} "
          f"{raw_snapshot[biggest] / GIB:>8.3f} GiB  {'yes' if raw_snapshot[biggest] <= CAP else 'NO'}")
    print(f"\n  every goal met       {'yes' if all(after <= goal for _, _, after, goal in goals) else 'NO'}")


if __name__ == "__main__":
    main()
