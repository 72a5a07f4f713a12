"""Every row the collector and the differ write must fit the Glue tables DECLARED IN template.yaml.

The collector runs for real (SnapshotCollector + KandjiClient + RateLimiter) against the
Kandji simulator over HTTP, for a fleet of every platform, into a LocalObjectStore folder;
the differ runs on two snapshots with the fleet mutated in between. The schema guard then
reads every file back and checks each row against the template's column types. It must
also reject rows that are wrong on purpose: the second half of this file feeds it some.
"""

from __future__ import annotations

import copy
import gzip
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import schema_guard
from local_pipeline import TOKEN, Pipeline, change_events, collect_with_simulator, run_pipeline
from schema_guard import Problem, SchemaGuard, SchemaViolation, parse_hive_type
from template_model import TEMPLATE_PATH

from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.diff.publisher import MemoryPublisher
from kandji_snapshots.history.tables import HISTORY_TABLES
from kandji_snapshots.query import athena_sql
from kandji_snapshots.settings import CollectorSettings
from kandji_snapshots.snapshots import schema
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.storage import LocalObjectStore
from kandji_snapshots.snapshots.table_io import iter_rows
from simulator import Fleet, KandjiSimulator

PLATFORMS = {"Mac", "iPhone", "iPad", "AppleTV", "Windows", "Android"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return run_pipeline(tmp_path_factory.mktemp("pipeline"))


@pytest.fixture(scope="module")
def guard() -> SchemaGuard:
    return SchemaGuard.from_template(TEMPLATE_PATH)


def rows_of(root: Path, manifest: Manifest, table: str) -> list[dict[str, Any]]:
    return list(iter_rows(LocalObjectStore(root), manifest.table_keys(table)))


# ---------------------------------------------------------------------------
# The template declares what schema.py says
# ---------------------------------------------------------------------------
def test_template_glue_columns_equal_the_schema() -> None:
    tables = schema_guard.load_glue_tables(TEMPLATE_PATH)
    for table in athena_sql.TABLE_COLUMNS:  # the snapshot tables' columns are schema.py's
        assert list(tables[table].hive_columns().items()) == list(athena_sql.hive_columns(table).items()), table
    assert set(tables) == set(athena_sql.TABLE_COLUMNS) | {table.name for table in HISTORY_TABLES}
    for table in (tables[name] for name in athena_sql.TABLE_COLUMNS):  # history tables: test_history_template
        assert list(table.partition_keys) == ["dt"]
        assert table.serde == schema_guard.HIVE_JSON_SERDE


def test_hive_type_strings_parse_back_to_the_schema_types() -> None:
    for table, columns in athena_sql.TABLE_COLUMNS.items():
        for name, kind in columns.items():
            assert parse_hive_type(kind.hive()).hive() == kind.hive(), f"{table}.{name}"
    parsed = parse_hive_type("array< struct<name:string, size:bigint, tags:array<string>, ok:boolean> >")
    assert parsed == schema.Array(schema.struct(name=schema.STRING, size=schema.BIGINT,
                                                tags=schema.Array(schema.STRING), ok=schema.BOOLEAN))
    for bad in ("struct<a:string", "array<>", "struct<a string>", "map<string,string>", "timestamp",
                "struct<a:string,a:bigint>", "string>", "struct<a:string,>", ""):
        with pytest.raises(schema_guard.HiveTypeError):
            parse_hive_type(bad)


# ---------------------------------------------------------------------------
# What the collector and the differ really write
# ---------------------------------------------------------------------------
def test_collector_and_differ_rows_fit_the_declared_tables(pipeline: Pipeline, guard: SchemaGuard) -> None:
    report = guard.check_folder(pipeline.root)
    assert [str(problem) for problem in report.problems] == []
    assert report.files >= 8  # 2 snapshots x 3 tables + 2 changes files
    devices = rows_of(pipeline.root, pipeline.second, "devices")
    assert {row["platform"] for row in devices} == PLATFORMS, "the fleet must cover every platform"
    assert report.rows["devices"] == len(devices) + pipeline.first.table_rows("devices")
    assert report.rows["device_details"] == report.rows["devices"]
    assert report.rows["device_apps"] > report.rows["devices"]
    # Older tenants' devices (fields missing, numeric user ids) are among them.
    assert any(row["tags"] is None for row in devices) and any(row["tags"] for row in devices)


def test_every_kind_of_change_event_was_checked(pipeline: Pipeline, guard: SchemaGuard) -> None:
    events = change_events(pipeline.root)
    assert {event["change_type"] for event in events} >= {
        "device_added", "device_removed", "device_changed", "app_installed", "app_updated"}
    assert guard.assert_rows("changes", events) == len(events)
    changed = [event for event in events if event["change_type"] == "device_changed"]
    values = [change[side] for event in changed for change in event["changes"] for side in ("before", "after")]
    assert any(isinstance(value, bool) for value in values), "booleans as they were (FileVault on -> off)"
    assert any(isinstance(value, str) for value in values)


def test_prism_app_rows_fit_the_declared_table(tmp_path: Path, guard: SchemaGuard) -> None:
    fleet = Fleet.generate(12, seed=5)
    root, scratch = tmp_path / "store", tmp_path / "scratch"
    scratch.mkdir()
    with KandjiSimulator(fleet, token=TOKEN, rate_limit_per_hour=None) as sim:
        manifest = collect_with_simulator(sim, LocalObjectStore(root), datetime.now(timezone.utc),
                                          CollectorSettings(apps_source="prism", hourly_reserve=0),
                                          temp_dir=str(scratch))
    assert manifest.document["apps_source"] == "prism"
    report = guard.check_folder(root)
    assert [str(problem) for problem in report.problems] == []
    assert report.rows["device_apps"] == sum(fleet.app_count(d) for d in fleet.device_ids()) > 0


def test_differ_writes_object_values_as_text(tmp_path: Path, guard: SchemaGuard) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    fleet = Fleet.generate(12, seed=5)
    store = LocalObjectStore(tmp_path)
    with KandjiSimulator(fleet, token=TOKEN, rate_limit_per_hour=None) as sim:
        first = collect_with_simulator(sim, store, now - timedelta(hours=2))
        phone = next(d for d in fleet.device_ids() if fleet.platform(d) in ("iPhone", "iPad"))
        fleet.set_lost_mode(phone, not fleet.list_item(phone).get("lost_mode_status"))
        second = collect_with_simulator(sim, store, now - timedelta(hours=1))
    for manifest in (first, second):
        SnapshotDiffer(store, MemoryPublisher()).run(manifest.snapshot_id)
    assert change_events(tmp_path), "the lost mode change must give an event"
    guard.check_folder(tmp_path).raise_if_any()


# ---------------------------------------------------------------------------
# The guard fails on rows that are wrong on purpose
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_rows(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """One real row of each table (a Mac's, for details), known to pass."""
    devices = rows_of(pipeline.root, pipeline.second, "devices")
    mac = next(row for row in devices if row["platform"] == "Mac" and row["user"] and row["tags"])
    details = next(row for row in rows_of(pipeline.root, pipeline.second, "device_details")
                   if row["device_id"] == mac["device_id"])
    app = next(row for row in rows_of(pipeline.root, pipeline.second, "device_apps") if row["bundle_id"])
    event = next(e for e in change_events(pipeline.root) if e["change_type"] == "device_changed")
    return {"devices": mac, "device_details": details, "device_apps": app, "changes": event}


def test_the_real_rows_pass(guard: SchemaGuard, good_rows: dict[str, dict[str, Any]]) -> None:
    for table, row in good_rows.items():
        assert guard.check_row(table, row) == [], table


def _set(row: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    row = copy.deepcopy(row)
    *parents, last = path.split(".")
    target: Any = row
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return row


WRONG = [
    # (table, path to set, value, the problem's path, words of its message)
    ("devices", "mdm_enabled", "True", "mdm_enabled", "declared boolean"),
    ("devices", "agent_installed", 1, "agent_installed", "declared boolean"),
    ("devices", "device_name", {"name": "x"}, "device_name", "declared string"),
    ("devices", "serial_number", 12345, "serial_number", "declared string"),
    ("devices", "brand_new_field", "x", "brand_new_field", "silently drop"),
    ("devices", "Device_Name", "x", "Device_Name", "case-sensitively"),
    ("devices", "user.is_archived", "false", "user.is_archived", "declared boolean"),
    ("devices", "user.department", "Finance", "user.department", "silently drop"),
    ("devices", "user", "someone@example.com", "user", "declared struct<"),
    ("devices", "tags", "Remote", "tags", "one-element array"),
    ("devices", "tags.0", 7, "tags[0]", "declared string"),
    ("devices", "last_check_in", "2024-07-23 14:11:37+00:00", "last_check_in", "ISO 8601"),
    ("devices", "extra", "{not json", "extra", "not valid JSON"),
    ("devices", "extra", {"a": 1}, "extra", "declared string"),
    ("devices", "dt", "2026-11-23", "dt", "partition key"),
    ("device_details", "filevault.filevault_enabled", "Yes", "filevault.filevault_enabled", "declared boolean"),
    ("device_details", "volumes.0.encrypted", "Yes", "volumes[0].encrypted", "declared boolean"),
    ("device_details", "volumes.0.mount_point", "/", "volumes[0].mount_point", "silently drop"),
    ("device_details", "general.assigned_user.id", 42, "general.assigned_user.id", "declared string"),
    ("device_details", "users", {"regular_users": []}, "users", "declared string"),
    ("device_details", "fetched_at", "yesterday", "fetched_at", "ISO 8601"),
    ("device_apps", "version", 126, "version", "declared string"),
    ("device_apps", "app_store_vendable", "True", "app_store_vendable", "declared boolean"),
    ("changes", "schema_version", "1", "schema_version", "declared bigint"),
    ("changes", "schema_version", 1.5, "schema_version", "declared bigint"),
    ("changes", "changes.0.before", {"a": 1}, "changes[0].before", "JSON text"),
    ("changes", "changes.0.after", ["a", "b"], "changes[0].after", "JSON text"),
    ("changes", "changes.0.old_value", "x", "changes[0].old_value", "silently drop"),
    ("changes", "app", [], "app", "declared struct<"),
    ("changes", "truncated", "yes", "truncated", "declared boolean"),
]


@pytest.mark.parametrize(("table", "path", "value", "where", "words"), WRONG,
                         ids=[f"{t}.{p}={v!r}" for t, p, v, *_ in WRONG])
def test_the_guard_rejects_a_wrongly_typed_or_undeclared_field(
        guard: SchemaGuard, good_rows: dict[str, dict[str, Any]], table: str, path: str, value: Any, where: str,
        words: str) -> None:
    problems = guard.check_row(table, _set(good_rows[table], path, value))
    assert problems, f"the guard accepted {table}.{path} = {value!r}"
    assert any(problem.path == where and words in problem.message for problem in problems), \
        [str(problem) for problem in problems]
    with pytest.raises(SchemaViolation, match=where.replace("[", r"\[").replace("]", r"\]")):
        guard.assert_rows(table, [good_rows[table], _set(good_rows[table], path, value)])


@pytest.mark.parametrize("value", [None, True, False, 12, 12.5, "14.5", ""])
def test_any_scalar_is_accepted_as_a_before_or_after_value(
        guard: SchemaGuard, good_rows: dict[str, dict[str, Any]], value: Any) -> None:
    for side in ("before", "after"):
        assert guard.check_row("changes", _set(good_rows["changes"], f"changes.0.{side}", value)) == []
    # ... but only there: the same scalar in any other string column is a type change.
    if value is not None and not isinstance(value, str):
        assert guard.check_row("changes", _set(good_rows["changes"], "changes.0.field", value))


def test_a_missing_column_is_reported_for_snapshot_tables_only(
        guard: SchemaGuard, good_rows: dict[str, dict[str, Any]]) -> None:
    device = dict(good_rows["devices"])
    del device["asset_tag"]
    assert [problem.path for problem in guard.check_row("devices", device)] == ["asset_tag"]
    event = dict(good_rows["changes"])
    del event["platform"]
    assert guard.check_row("changes", event) == []  # events carry only the fields of their type


def test_lines_and_files_the_serde_would_misread(guard: SchemaGuard, good_rows: dict[str, dict[str, Any]]) -> None:
    line = json.dumps(good_rows["devices"])
    assert guard.check_line("devices", line)[1] == []
    duplicated = line[:-1] + ', "device_name": "again"}'
    assert any("duplicate key" in problem.message for problem in guard.check_line("devices", duplicated)[1])
    assert any("empty line" in p.message for p in guard.check_line("devices", "  ")[1])
    assert any("not valid JSON" in p.message for p in guard.check_line("devices", line[:-1] + ', "x": NaN}')[1])
    assert any("JSON object" in p.message for p in guard.check_line("devices", "[1, 2]")[1])
    assert any("not gzip" in p.message for p in guard.check_data_file("devices", line.encode())[1])
    rows, problems = guard.check_data_file("devices", gzip.compress((line + "\n\n" + line + "\n").encode()))
    assert rows == 3 and [p.message for p in problems if "empty line" in p.message]
    assert guard.check_data_file("devices", gzip.compress(b"")) == (0, [])


def test_a_folder_with_a_bad_file_fails(tmp_path: Path, guard: SchemaGuard,
                                        good_rows: dict[str, dict[str, Any]]) -> None:
    store = LocalObjectStore(tmp_path)
    row = dict(good_rows["devices"], snapshot_id="20261120T000000Z")
    bad = dict(row, is_missing="no")
    store.put("snapshots/devices/dt=2026-11-20/20261120T000000Z.json.gz",
              gzip.compress((json.dumps(row) + "\n" + json.dumps(bad) + "\n").encode()))
    # A row of another day, and a file Athena would read although no writer names files so.
    store.put("snapshots/devices/dt=2026-11-21/20261121T000000Z.json.gz",
              gzip.compress((json.dumps(dict(row, snapshot_id="20261121T000000Z")) + "\n" +
                             json.dumps(row) + "\n").encode()))
    store.put("snapshots/devices/dt=2026-11-21/notes.txt", b"hello")
    report = guard.check_folder(tmp_path)
    messages = [str(problem) for problem in report.problems]
    assert report.rows["devices"] == 4
    assert any("devices.is_missing: declared boolean" in m for m in messages), messages
    assert any("row of snapshot 20261120T000000Z in the file of snapshot 20261121T000000Z" in m for m in messages)
    assert any("notes.txt" in m for m in messages)
    with pytest.raises(SchemaViolation):
        report.raise_if_any()
    assert isinstance(report.problems[0], Problem)
