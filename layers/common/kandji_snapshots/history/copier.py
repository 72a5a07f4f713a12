"""Copy each committed snapshot into the columnar history, once, with Athena.

Per history table and committed snapshot (oldest first), one `INSERT INTO <table>_history` writes the
snapshot's partition (`dt=`/`snapshot_id=`). The rules that make a re-run, a retry or a killed run copy
every row exactly once:

* copied = Athena registered the partition (it does so when the INSERT commits). A copied snapshot is
  skipped; nothing else is asked.
* Before an INSERT, its attempt is recorded (`history/_attempts/<table>/<snapshot_id>.json`) with the
  ClientRequestToken it is started with, and once started, with its query id: a run killed while it waited
  finds the query it started (by id, or by starting again with the token, which returns the same query)
  instead of starting a second one.
* A query still queued or running is waited for (until the run's deadline; then the next run waits on).
* A failed or cancelled attempt may have left files in the partition's folder (Athena leaves them): they
  are deleted, and the next attempt, with a new token, starts from an empty folder. The partition was never
  registered, so no reader saw them.
* A copy Athena cannot make holds back no other: the run copies the rest, then fails listing why.
* Only committed snapshots are copied: the ids come from the manifests, and Athena opens only the files the
  manifest lists (tables.select_sql). Parts of a run that never committed are never read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Protocol

from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.history.tables import HISTORY_TABLES, HistoryTable, insert_sql
from kandji_snapshots.snapshots.catalog import Manifest, committed_snapshot_ids, load_manifest
from kandji_snapshots.snapshots.layout import history_attempt_key, history_partition_prefix
from kandji_snapshots.snapshots.storage import ObjectNotFound, ObjectStore
from kandji_snapshots.snapshots.timeutil import format_timestamp, partition_date

logger = logging.getLogger(__name__)


class QueryState(str, Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self not in (QueryState.QUEUED, QueryState.RUNNING)


class _Outcome(Enum):
    COPIED = "copied"
    COPIED_BEFORE = "copied before"  # by an earlier run's query (its partition not listed yet)
    WAITING = "waiting"  # the query still runs at the deadline


@dataclass(frozen=True)
class QueryStatus:
    state: QueryState
    reason: str = ""


class QueryEngine(Protocol):
    """Athena, as the copier uses it (history.aws.AthenaEngine; a fake in the tests)."""

    def start(self, sql: str, token: str) -> str:
        """Start `sql`, or return the query already started with `token`; the query execution id."""

    def status(self, query_id: str) -> QueryStatus: ...


class PartitionCatalog(Protocol):
    """Which snapshots a history table holds: the partitions Athena registered (Glue)."""

    def copied_snapshots(self, table: str, since_day: str) -> set[str]: ...


class HistoryCopyFailed(KandjiSnapshotsError):
    """Athena could not copy a snapshot; the next run cleans up and tries again."""


@dataclass(frozen=True)
class CopySettings:
    lookback_days: int = 3  # each run looks at the committed snapshots of today and the days before
    poll_seconds: float = 2.0
    reserve_seconds: float = 30.0  # no new INSERT is started with less time than this left


@dataclass
class CopyReport:
    since: str
    copied: list[str] = field(default_factory=list)  # "<table>/<snapshot_id>", copied by this run
    already_copied: int = 0
    waiting: str | None = None  # the copy still running when the run stopped (the next run waits on it)
    stopped_early: bool = False  # out of time: the rest is copied by the next runs
    failed: list[str] = field(default_factory=list)  # why each failed copy failed (retried by the next run)

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.since, "copied": len(self.copied), "already_copied": self.already_copied,
                "waiting": self.waiting, "stopped_early": self.stopped_early, "failed": len(self.failed)}


class HistoryCopier:
    def __init__(self, store: ObjectStore, engine: QueryEngine, catalog: PartitionCatalog, bucket: str, *,
                 clock: Any, settings: CopySettings = CopySettings(),
                 tables: Iterable[HistoryTable] = HISTORY_TABLES):
        self.store, self.engine, self.catalog, self.bucket = store, engine, catalog, bucket
        self.clock, self.settings, self.tables = clock, settings, tuple(tables)

    def since_day(self, requested: str | None = None) -> str:
        """The first day a run copies: `requested` (a backfill), else `lookback_days` back from today."""
        if requested:
            datetime.strptime(requested, "%Y-%m-%d")  # ValueError for anything but YYYY-MM-DD
            return requested
        today = self.clock.now()
        return (today - timedelta(days=self.settings.lookback_days - 1)).strftime("%Y-%m-%d")

    def run(self, deadline: float, since: str | None = None) -> CopyReport:
        """Copy what is missing from `since` on, oldest first, until done or `deadline` (clock.monotonic)."""
        report = CopyReport(since=self.since_day(since))
        pending = [snapshot_id for snapshot_id in committed_snapshot_ids(self.store)
                   if partition_date(snapshot_id) >= report.since]
        copied = {table.name: self.catalog.copied_snapshots(table.name, report.since) for table in self.tables}
        for snapshot_id in pending:
            manifest: Manifest | None = None
            for table in self.tables:
                if snapshot_id in copied[table.name]:
                    report.already_copied += 1
                    continue
                if self.clock.monotonic() > deadline - self.settings.reserve_seconds:
                    report.stopped_early = True
                    return self._finish(report)
                manifest = manifest or load_manifest(self.store, snapshot_id)
                try:
                    outcome = self._copy(table, manifest, deadline)
                except HistoryCopyFailed as error:  # one bad snapshot must not hold back the others
                    report.failed.append(str(error))
                    continue
                if outcome is _Outcome.WAITING:
                    report.waiting = f"{table.name}/{snapshot_id}"
                    report.stopped_early = True
                    return self._finish(report)
                if outcome is _Outcome.COPIED_BEFORE:
                    report.already_copied += 1
                else:
                    report.copied.append(f"{table.name}/{snapshot_id}")
        return self._finish(report)

    @staticmethod
    def _finish(report: CopyReport) -> CopyReport:
        if report.failed:
            logger.error("history copy: %d copied, %d failed", len(report.copied), len(report.failed),
                         extra=report.as_dict())
            raise HistoryCopyFailed(f"{len(report.failed)} history copies failed (the others were made): "
                                    + " | ".join(report.failed[:5]))
        return report

    def _copy(self, table: HistoryTable, manifest: Manifest, deadline: float) -> "_Outcome":
        """Copy one snapshot into one table, or find the earlier attempt that did (or is still doing) it."""
        snapshot_id = manifest.snapshot_id
        sql = insert_sql(table, snapshot_id, [f"s3://{self.bucket}/{key}" for key in manifest.table_keys(table.source)])
        attempt = self._last_attempt(table, snapshot_id)
        if attempt is not None:
            # The query that attempt started: by its id, or (killed before noting it) by its token, which Athena
            # still knows minutes later.
            query_id = attempt.get("query_id") or self.engine.start(sql, attempt["token"])
            status = self._wait(query_id, deadline)
            if status.state is QueryState.SUCCEEDED:
                return _Outcome.COPIED_BEFORE  # its partition is being registered (Glue lists it soon)
            if not status.state.finished:
                return _Outcome.WAITING
            logger.warning("history copy %s of %s failed earlier (%s): cleaning up and trying again",
                           table.name, snapshot_id, status.reason)
            number = attempt["attempt"] + 1
        else:
            number = 1
        self._discard_partial_files(table, snapshot_id)
        token = f"kandji-history-{table.name}-{snapshot_id}-{number}"
        attempt = {"attempt": number, "token": token, "started_at": format_timestamp(self.clock.now())}
        self._note_attempt(table, snapshot_id, attempt)
        query_id = self.engine.start(sql, token)
        self._note_attempt(table, snapshot_id, {**attempt, "query_id": query_id})
        status = self._wait(query_id, deadline)
        if status.state is QueryState.SUCCEEDED:
            return _Outcome.COPIED
        if not status.state.finished:
            return _Outcome.WAITING
        raise HistoryCopyFailed(f"Athena could not copy snapshot {snapshot_id} into {table.name} "
                                f"({status.state.value}: {status.reason}). The next run removes what it wrote "
                                "and tries again; the raw snapshot is untouched.")

    def _note_attempt(self, table: HistoryTable, snapshot_id: str, attempt: dict[str, Any]) -> None:
        self.store.put(history_attempt_key(table.name, snapshot_id), json.dumps(attempt).encode(),
                       content_type="application/json")

    def _last_attempt(self, table: HistoryTable, snapshot_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.get(history_attempt_key(table.name, snapshot_id)))
        except ObjectNotFound:
            return None

    def _discard_partial_files(self, table: HistoryTable, snapshot_id: str) -> None:
        leftovers = list(self.store.list_keys(history_partition_prefix(table.name, snapshot_id)))
        if leftovers:
            logger.warning("deleting %d files a failed copy left in %s", len(leftovers),
                           history_partition_prefix(table.name, snapshot_id))
            self.store.delete(leftovers)
        # S3 reports undeleted keys without failing: an orphan left here would be read once the retry commits.
        if any(True for _ in self.store.list_keys(history_partition_prefix(table.name, snapshot_id))):
            raise HistoryCopyFailed(f"Files a failed copy left in {history_partition_prefix(table.name, snapshot_id)} "
                                    "could not be deleted (see the log): no new copy is started over them.")

    def _wait(self, query_id: str, deadline: float) -> QueryStatus:
        while True:
            status = self.engine.status(query_id)
            if status.state.finished or self.clock.monotonic() + self.settings.poll_seconds > deadline:
                return status
            self.clock.sleep(self.settings.poll_seconds)
