"""Builds the history copier from the environment: the one place that wires its adapters.

Environment:
    SNAPSHOT_BUCKET         the bucket holding snapshots/ and history/ (required)
    ATHENA_WORKGROUP        the workgroup the INSERTs run in (required)
    ATHENA_DATABASE         the Glue database of the snapshot and history tables (required)
    HISTORY_LOOKBACK_DAYS   days of committed snapshots each run looks at (default 3)
The event may ask for a backfill: {"since": "YYYY-MM-DD"} copies every committed snapshot from that day on
(over as many runs as it takes: each stops in time and the next goes on).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.history.copier import CopySettings, HistoryCopier, PartitionCatalog, QueryEngine
from kandji_snapshots.settings import number_setting, required_setting, snapshot_bucket
from kandji_snapshots.snapshots.storage import ObjectStore, S3ObjectStore
from kandji_snapshots.snapshots.timeutil import SystemClock


class BadHistoryRequest(KandjiSnapshotsError):
    """The invocation's event is not what the history copy understands."""


@dataclass(frozen=True)
class HistoryEnvironment:
    bucket: str
    workgroup: str
    database: str
    lookback_days: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "HistoryEnvironment":
        env = os.environ if env is None else env
        return cls(bucket=snapshot_bucket(env),
                   workgroup=required_setting(env, "ATHENA_WORKGROUP", "the Athena workgroup the copies run in"),
                   database=required_setting(env, "ATHENA_DATABASE", "the Glue database of the history tables"),
                   lookback_days=int(number_setting(env, "HISTORY_LOOKBACK_DAYS", 3, minimum=1, maximum=3660)))


def build_copier(env: HistoryEnvironment, *, store: ObjectStore | None = None, engine: QueryEngine | None = None,
                 catalog: PartitionCatalog | None = None, clock: Any = SystemClock) -> HistoryCopier:
    """The copier for `env`: S3, Athena and Glue unless a store, an engine and a catalog are given."""
    if store is None or engine is None or catalog is None:
        import boto3

        from kandji_snapshots.history.aws import AthenaEngine, GluePartitionCatalog

        store = store or S3ObjectStore(boto3.client("s3"), env.bucket)
        engine = engine or AthenaEngine(boto3.client("athena"), env.workgroup, env.database)
        catalog = catalog or GluePartitionCatalog(boto3.client("glue"), env.database)
    return HistoryCopier(store, engine, catalog, env.bucket, clock=clock,
                         settings=CopySettings(lookback_days=env.lookback_days))


def run_history_copy(event: Mapping[str, Any] | None, remaining_seconds: float, *, env: Mapping[str, str] | None = None,
                     clock: Any = SystemClock, **adapters: Any) -> dict[str, Any]:
    """One scheduled run (or a backfill: {"since": "YYYY-MM-DD"}), stopping before `remaining_seconds` run out."""
    event = event or {}
    since = event.get("since") if isinstance(event, Mapping) else None
    if since is not None and not isinstance(since, str):
        raise BadHistoryRequest(f"since={since!r}: give the first day to copy as \"YYYY-MM-DD\" (UTC).")
    copier = build_copier(HistoryEnvironment.from_env(env), clock=clock, **adapters)
    try:
        report = copier.run(deadline=clock.monotonic() + remaining_seconds, since=since)
    except ValueError:
        raise BadHistoryRequest(f"since={since!r} is not a date: give it as \"YYYY-MM-DD\" (UTC).") from None
    return report.as_dict()
