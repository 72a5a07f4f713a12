"""The history copy's rules on a fake Athena: every committed snapshot lands in every history table exactly
once, whatever fails, is re-run or is killed on the way; nothing uncommitted is ever copied."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from kandji_snapshots.history.copier import CopySettings, HistoryCopier, HistoryCopyFailed, QueryState, QueryStatus
from kandji_snapshots.history.runtime import BadHistoryRequest, run_history_copy
from kandji_snapshots.history.tables import HISTORY_TABLES
from kandji_snapshots.snapshots.catalog import Manifest, write_manifest
from kandji_snapshots.snapshots.layout import history_attempt_key, history_partition_prefix, table_part_key
from kandji_snapshots.snapshots.storage import MemoryObjectStore

BUCKET = "history-bucket"
NOW = datetime(2026, 11, 23, 12, 30, tzinfo=timezone.utc)
TODAY = ["20261123T090000Z", "20261123T100000Z", "20261123T110000Z"]


class FakeClock:
    def __init__(self):
        self.elapsed = 0.0

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        self.elapsed += seconds

    def now(self) -> datetime:
        return NOW


class FakeAthena:
    """Athena as the copier sees it: an INSERT writes its files into the partition's folder as it runs; the
    partition is registered (visible) only when it succeeds; a failed one leaves its files behind; a
    ClientRequestToken seen before returns the query it started."""

    def __init__(self, store: MemoryObjectStore):
        self.store = store
        self.queries: dict[str, dict] = {}
        self.tokens: dict[str, str] = {}
        self.registered: dict[str, set[str]] = {}
        self.plans: dict[tuple[str, str], list[str]] = {}  # (table, snapshot id) -> outcomes of its next starts

    def plan(self, table: str, snapshot_id: str, *outcomes: str) -> None:
        self.plans[(table, snapshot_id)] = list(outcomes)

    def start(self, sql: str, token: str) -> str:
        if token in self.tokens:
            return self.tokens[token]
        table = re.match(r"INSERT INTO (\w+)\n", sql).group(1)
        snapshot_id = re.search(r"t\.snapshot_id = '(\w+)'", sql).group(1)
        query_id = f"q{len(self.queries) + 1}"
        outcomes = self.plans.get((table, snapshot_id)) or []
        state = outcomes.pop(0) if outcomes else "SUCCEEDED"
        self.queries[query_id] = {"sql": sql, "token": token, "table": table, "snapshot_id": snapshot_id,
                                  "state": "RUNNING"}
        self.tokens[token] = query_id
        self.store.put(history_partition_prefix(table, snapshot_id) + f"{query_id}_00000.parquet", b"rows")
        self.finish(query_id, state)
        return query_id

    def finish(self, query_id: str, state: str) -> None:
        query = self.queries[query_id]
        query["state"] = state
        if state == "SUCCEEDED":
            self.registered.setdefault(query["table"], set()).add(query["snapshot_id"])

    def status(self, query_id: str) -> QueryStatus:
        return QueryStatus(QueryState(self.queries[query_id]["state"]), "boom" if self.queries[query_id]["state"]
                           == "FAILED" else "")

    def copied_snapshots(self, table: str, since_day: str) -> set[str]:
        return {s for s in self.registered.get(table, set()) if f"{s[0:4]}-{s[4:6]}-{s[6:8]}" >= since_day}

    def visible_files(self, table: str, snapshot_id: str) -> list[str]:
        """What a reader sees of one snapshot: the files of a registered partition."""
        if snapshot_id not in self.registered.get(table, set()):
            return []
        return list(self.store.list_keys(history_partition_prefix(table, snapshot_id)))

    def started(self) -> int:
        return len(self.queries)


def commit(store: MemoryObjectStore, snapshot_id: str) -> Manifest:
    """A committed snapshot: a part per table and the manifest listing them."""
    tables = {}
    for table in ("devices", "device_details", "device_apps", "device_posture"):
        key = table_part_key(table, snapshot_id, 0)
        store.put(key, b"{}\n")
        tables[table] = {"keys": [key], "rows": 1}
    manifest = Manifest({"schema_version": 1, "snapshot_id": snapshot_id, "tables": tables})
    write_manifest(store, manifest)
    return manifest


@pytest.fixture
def world():
    store, clock = MemoryObjectStore(), FakeClock()
    athena = FakeAthena(store)
    for snapshot_id in TODAY:
        commit(store, snapshot_id)

    def copier(**settings) -> HistoryCopier:
        return HistoryCopier(store, athena, athena, BUCKET, clock=clock, settings=CopySettings(**settings))

    return store, athena, clock, copier


def every_copy(snapshot_ids) -> list[str]:
    return [f"{table.name}/{snapshot_id}" for snapshot_id in snapshot_ids for table in HISTORY_TABLES]


def test_every_committed_snapshot_is_copied_into_every_table_once_oldest_first(world):
    store, athena, clock, copier = world
    store.put(table_part_key("devices", "20261123T113000Z", 0), b"{}\n")  # a killed run: parts, no manifest
    report = copier().run(deadline=900)
    assert report.copied == every_copy(TODAY) and not report.stopped_early
    assert athena.started() == 4 * len(TODAY)
    for table in HISTORY_TABLES:
        assert athena.registered[table.name] == set(TODAY)  # never the uncommitted 11:30 run
        for snapshot_id in TODAY:
            assert len(athena.visible_files(table.name, snapshot_id)) == 1


def test_athena_reads_only_the_files_the_manifest_lists(world):
    store, athena, clock, copier = world
    copier().run(deadline=900)
    [query] = [q for q in athena.queries.values()
               if q["table"] == "device_apps_history" and q["snapshot_id"] == TODAY[0]]
    listed = f"s3://{BUCKET}/{table_part_key('device_apps', TODAY[0], 0)}"
    assert f't."$path" IN (\'{listed}\')' in query["sql"]
    assert "FROM device_apps t" in query["sql"] and "ORDER BY t.device_id" in query["sql"]


def test_running_again_copies_nothing_twice(world):
    store, athena, clock, copier = world
    copier().run(deadline=900)
    again = copier().run(deadline=900)
    assert again.copied == [] and again.already_copied == 4 * len(TODAY)
    assert athena.started() == 4 * len(TODAY)
    commit(store, "20261123T120000Z")  # the next hour's snapshot: only it is copied
    assert copier().run(deadline=900).copied == every_copy(["20261123T120000Z"])


def test_a_failed_copy_is_never_seen_and_is_redone_once_from_an_empty_folder(world):
    store, athena, clock, copier = world
    athena.plan("device_details_history", TODAY[1], "FAILED")
    with pytest.raises(HistoryCopyFailed, match="boom"):
        copier().run(deadline=900)
    orphan = list(store.list_keys(history_partition_prefix("device_details_history", TODAY[1])))
    assert len(orphan) == 1 and athena.visible_files("device_details_history", TODAY[1]) == []
    copier().run(deadline=900)
    visible = athena.visible_files("device_details_history", TODAY[1])
    assert len(visible) == 1 and visible != orphan  # the orphan is gone, the retry's rows are there once
    tokens = [q["token"] for q in athena.queries.values()
              if q["table"] == "device_details_history" and q["snapshot_id"] == TODAY[1]]
    assert len(tokens) == 2 and len(set(tokens)) == 2  # a new token: Athena must not hand back the failed query
    assert all(len(athena.visible_files(t.name, s)) == 1 for t in HISTORY_TABLES for s in TODAY)


def test_a_run_that_stops_while_athena_copies_waits_for_that_query_next_time(world):
    store, athena, clock, copier = world
    athena.plan("devices_history", TODAY[0], "RUNNING")
    report = copier().run(deadline=120)
    assert report.waiting == f"devices_history/{TODAY[0]}" and report.stopped_early
    assert athena.started() == 1
    running = json.loads(store.get(history_attempt_key("devices_history", TODAY[0])))["query_id"]
    # Still running when the next run comes: it waits on the same query (same token), deletes nothing.
    report = copier().run(deadline=clock.elapsed + 120)
    assert report.waiting == f"devices_history/{TODAY[0]}" and athena.started() == 1
    athena.finish(running, "SUCCEEDED")
    report = copier().run(deadline=clock.elapsed + 900)
    assert f"devices_history/{TODAY[0]}" not in report.copied and report.already_copied == 1
    assert athena.started() == 4 * len(TODAY)  # the running one was not started twice
    assert len(athena.visible_files("devices_history", TODAY[0])) == 1


def test_a_copy_athena_committed_is_not_redone_while_glue_lags(world):
    store, athena, clock, copier = world
    copier().run(deadline=900)
    athena.registered["device_posture_history"].discard(TODAY[2])  # the partition not listed yet
    copier().run(deadline=900)
    assert athena.started() == 4 * len(TODAY)


def test_files_that_cannot_be_deleted_stop_the_retry(world, monkeypatch):
    store, athena, clock, copier = world
    athena.plan("devices_history", TODAY[0], "FAILED")
    with pytest.raises(HistoryCopyFailed):
        copier().run(deadline=900)
    started = athena.started()  # the failed copy and every other one
    monkeypatch.setattr(store, "delete", lambda keys: None)  # S3 answered 200 but kept them
    with pytest.raises(HistoryCopyFailed, match="could not be deleted"):
        copier().run(deadline=900)
    assert athena.started() == started  # no copy started over the leftovers


def test_each_run_looks_back_a_few_days_and_a_backfill_further(world):
    store, athena, clock, copier = world
    commit(store, "20261101T090000Z")
    assert copier(lookback_days=3).run(deadline=900).copied == every_copy(TODAY)
    backfill = copier().run(deadline=900, since="2026-11-01")
    assert backfill.copied == every_copy(["20261101T090000Z"])


def test_a_run_short_of_time_starts_no_copy_it_cannot_wait_for(world):
    store, athena, clock, copier = world
    report = copier(reserve_seconds=60).run(deadline=59)
    assert report.stopped_early and report.copied == [] and athena.started() == 0


def test_the_handler_entry_checks_its_event_and_its_environment(world):
    store, athena, clock, copier = world
    env = {"SNAPSHOT_BUCKET": BUCKET, "ATHENA_WORKGROUP": "wg", "ATHENA_DATABASE": "db"}
    result = run_history_copy({}, 900, env=env, clock=clock, store=store, engine=athena, catalog=athena)
    assert result["copied"] == 12 and result["since"] == "2026-11-21"
    with pytest.raises(BadHistoryRequest):
        run_history_copy({"since": "last tuesday"}, 900, env=env, clock=clock, store=store, engine=athena,
                         catalog=athena)


def test_a_run_killed_between_starting_a_copy_and_noting_its_id_finds_it_by_its_token(world, monkeypatch):
    store, athena, clock, copier = world
    athena.plan("devices_history", TODAY[0], "RUNNING")
    noted = []
    real_put = store.put

    def killed_after_the_start(key, body, **options):
        if key == history_attempt_key("devices_history", TODAY[0]) and b"query_id" in body:
            raise TimeoutError("Lambda timed out")  # the query runs on, its id unnoted
        noted.append(key)
        return real_put(key, body, **options)

    monkeypatch.setattr(store, "put", killed_after_the_start)
    with pytest.raises(TimeoutError):
        copier().run(deadline=900)
    monkeypatch.setattr(store, "put", real_put)
    assert athena.started() == 1 and "query_id" not in json.loads(store.get(noted[0]))
    report = copier().run(deadline=clock.elapsed + 60)  # still running: found by its token, waited on
    assert report.waiting == f"devices_history/{TODAY[0]}" and athena.started() == 1
    assert list(store.list_keys(history_partition_prefix("devices_history", TODAY[0])))  # its files stay
    athena.finish("q1", "SUCCEEDED")
    copier().run(deadline=clock.elapsed + 900)
    assert athena.started() == 4 * len(TODAY)
    assert len(athena.visible_files("devices_history", TODAY[0])) == 1


def test_a_snapshot_athena_cannot_copy_holds_back_no_other(world):
    store, athena, clock, copier = world
    athena.plan("device_apps_history", TODAY[0], "FAILED", "FAILED")  # e.g. a line Athena cannot read
    for _ in range(2):
        with pytest.raises(HistoryCopyFailed, match="1 history copies failed"):
            copier().run(deadline=clock.elapsed + 900)
    assert athena.registered["device_apps_history"] == set(TODAY[1:])
    assert all(athena.registered[t.name] == set(TODAY) for t in HISTORY_TABLES if t.name != "device_apps_history")
