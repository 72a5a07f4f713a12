"""The Athena views and saved queries, run by DuckDB (translated by sqlglot) over a local snapshot folder,
give the answers the simulator implies.

The folder is what the real pipeline leaves behind (tests/local_pipeline.run_pipeline):
two snapshots of a simulated fleet of every platform, mutated in between, and the
differ's change files. Every expectation is computed from the simulator's own data.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from local_pipeline import TOKEN, Pipeline, change_events, collect_with_simulator, run_pipeline

from kandji_snapshots.query import athena_sql, local_duckdb
from kandji_snapshots.snapshots.storage import LocalObjectStore
from kandji_snapshots.snapshots.timeutil import parse_timestamp
from simulator import Fleet, KandjiSimulator

CHROME = "com.google.Chrome"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return run_pipeline(tmp_path_factory.mktemp("local-queries"))


@pytest.fixture(scope="module")
def con(pipeline: Pipeline) -> Any:
    return local_duckdb.connect(pipeline.root)


def run(con: Any, name: str, **parameters: Any) -> list[dict[str, Any]]:
    return local_duckdb.run_query(con, name, **parameters)


def macs(fleet: Fleet) -> list[str]:
    return [device_id for device_id in fleet.device_ids() if fleet.platform(device_id) == "Mac"]


# ---------------------------------------------------------------------------
# The views
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("table", list(athena_sql.TABLE_COLUMNS))
def test_views_have_the_declared_columns_and_types(con: Any, table: str) -> None:
    described = con.execute(f"DESCRIBE {table}").fetchall()
    expected = {**local_duckdb.duckdb_columns(table), "dt": "VARCHAR"}
    assert [row[0] for row in described] == list(expected)
    normalize = lambda text: re.sub(r'[\s"]', "", text)  # noqa: E731 - DuckDB prints types without quotes
    assert [normalize(row[1]) for row in described] == [normalize(kind) for kind in expected.values()]


@pytest.mark.parametrize("view", athena_sql.VIEWS, ids=lambda view: view.name)
def test_athena_views_have_the_columns_the_template_declares(con: Any, view: athena_sql.View) -> None:
    described = con.execute(f"DESCRIBE {view.name}").fetchall()
    assert [row[0] for row in described] == list(view.columns())
    normalize = lambda text: re.sub(r'[\s"]', "", text)  # noqa: E731
    assert [normalize(row[1]) for row in described] == [normalize(local_duckdb.duckdb_type(kind))
                                                         for kind in view.columns().values()]


def test_latest_views_hold_the_latest_committed_snapshot(con: Any, pipeline: Pipeline) -> None:
    for view in athena_sql.VIEWS:
        snapshots = {row[0] for row in con.execute(f"SELECT DISTINCT snapshot_id FROM {view.name}").fetchall()}
        assert snapshots == {pipeline.second.snapshot_id}, view.name
    assert con.execute("SELECT count(*) FROM latest_devices").fetchone()[0] == pipeline.second.table_rows("devices")
    committed = con.execute("SELECT snapshot_id, committed_at, previous_snapshot_id, device_count "
                            "FROM committed_snapshots ORDER BY 1").fetchall()
    assert committed == [(manifest.snapshot_id, manifest.document["finished_at"],
                          manifest.document["previous_snapshot_id"], manifest.document["device_count"])
                         for manifest in (pipeline.first, pipeline.second)]


def test_date_diff_keeps_trino_s_meaning() -> None:
    """Trino counts whole days elapsed (23:00 -> 01:00 is 0 days); DuckDB's own date_diff counts midnights."""
    import duckdb

    con = local_duckdb.session(duckdb.connect())
    for start, end, days in (("2026-01-01T23:00:00Z", "2026-01-02T01:00:00Z", 0),
                             ("2026-01-01T23:00:00Z", "2026-01-03T01:00:00Z", 1),
                             ("2026-01-01T01:00:00Z", "2026-01-02T01:00:00Z", 1)):
        sql = f"SELECT date_diff('day', from_iso8601_timestamp('{start}'), from_iso8601_timestamp('{end}'))"
        assert con.execute(local_duckdb.translate(sql)).fetchone()[0] == days, (start, end)


def test_views_hold_both_snapshots_and_the_changes(con: Any, pipeline: Pipeline) -> None:
    counts = dict(con.execute("SELECT snapshot_id, count(*) FROM devices GROUP BY 1").fetchall())
    assert counts == {pipeline.first.snapshot_id: pipeline.first.table_rows("devices"),
                      pipeline.second.snapshot_id: pipeline.second.table_rows("devices")}
    assert con.execute("SELECT count(*) FROM changes").fetchone()[0] == len(change_events(pipeline.root))
    (dt,) = {row[0] for row in con.execute("SELECT DISTINCT dt FROM device_apps WHERE snapshot_id = ?",
                                           [pipeline.second.snapshot_id]).fetchall()}
    assert dt == pipeline.second.document["dt"]


# ---------------------------------------------------------------------------
# Each question, answered from the folder and from the simulator
# ---------------------------------------------------------------------------
def test_latest_inventory_is_the_fleet_as_last_served(con: Any, pipeline: Pipeline) -> None:
    rows = run(con, "latest_inventory")
    fleet = pipeline.fleet
    assert sorted(row["device_id"] for row in rows) == sorted(fleet.device_ids())
    assert {row["snapshot_id"] for row in rows} == {pipeline.second.snapshot_id}
    for row in rows:
        item = fleet.list_item(row["device_id"])
        assert (row["serial_number"], row["platform"], row["os_version"]) == \
            (item["serial_number"], item["platform"], item["os_version"])
        user = item["user"] if isinstance(item["user"], dict) else {}
        assert row["user_email"] == (user.get("email") or None)
        assert row["last_check_in"] == parse_timestamp(item["last_check_in"]).replace(tzinfo=None)
    assert pipeline.demo["enrolled"]["device_id"] in {row["device_id"] for row in rows}
    assert pipeline.demo["removed"]["device_id"] not in {row["device_id"] for row in rows}


def test_devices_not_checked_in_for_14_days(con: Any, pipeline: Pipeline) -> None:
    threshold = pipeline.now - timedelta(days=14)
    expected = {device_id for device_id in pipeline.fleet.device_ids()
                if parse_timestamp(pipeline.fleet.list_item(device_id)["last_check_in"]) < threshold}
    assert expected == set(pipeline.stale) and len(expected) == 2
    rows = run(con, "not_checked_in")
    assert {row["device_id"] for row in rows} == expected
    for row in rows:
        assert row["days_since_check_in"] == (pipeline.now - pipeline.stale[row["device_id"]]).days
    # The threshold is a parameter locally: 5 days also catches the device silent for 10.
    assert len(run(con, "not_checked_in", days=5)) == 3


def test_macs_with_filevault_off(con: Any, pipeline: Pipeline) -> None:
    fleet = pipeline.fleet
    expected = {device_id for device_id in macs(fleet)
                if fleet.details(device_id)["filevault"]["filevault_enabled"] is not True}
    assert pipeline.demo["filevault_disabled"]["device_id"] in expected
    rows = run(con, "filevault_off")
    assert {row["device_id"] for row in rows if row["status"] == "off"} == expected
    assert all(row["filevault_enabled"] is False and row["source"] == "prism" for row in rows)


def test_macs_without_the_agent(con: Any, pipeline: Pipeline) -> None:
    fleet = pipeline.fleet
    expected = {device_id for device_id in macs(fleet) if not fleet.list_item(device_id)["agent_installed"]}
    assert pipeline.agent_removed in expected
    rows = run(con, "agent_missing")
    assert {row["device_id"] for row in rows} == expected
    assert all(row["agent_installed"] is False for row in rows)


def test_devices_per_platform_count_every_platform(con: Any, pipeline: Pipeline) -> None:
    fleet = pipeline.fleet
    items = [fleet.list_item(device_id) for device_id in fleet.device_ids()]
    rows = {row["platform"]: row for row in run(con, "platform_summary")}
    assert set(rows) == {"Mac", "iPhone", "iPad", "AppleTV", "Windows", "Android"}
    for platform, row in rows.items():
        mine = [item for item in items if item["platform"] == platform]
        assert row["device_count"] == len(mine)
        assert row["mdm_disabled"] == sum(not item["mdm_enabled"] for item in mine)
        assert row["in_lost_mode"] == sum(item.get("lost_mode_status") == "ENABLED" for item in mine)
        assert row["os_versions"] == len({item["os_version"] for item in mine})
    assert rows["Android"]["in_lost_mode"] >= 1


def test_devices_in_lost_mode_on_any_platform(con: Any, pipeline: Pipeline) -> None:
    fleet = pipeline.fleet
    expected = {device_id for device_id in fleet.device_ids()
                if fleet.list_item(device_id).get("lost_mode_status") == "ENABLED"
                or fleet.details(device_id).get("lost_mode", {}).get("lost_mode_status") == "ENABLED"}
    rows = run(con, "lost_mode_devices")
    assert {row["device_id"] for row in rows} == expected
    assert "Android" in {row["platform"] for row in rows}
    for row in rows:
        location = fleet.details(row["device_id"])["lost_mode"]["last_location"]
        assert (row["latitude"], row["longitude"]) == (float(location["latitude"]), float(location["longitude"]))
        assert row["enabled_by"] and row["enabled_at"] is not None


def _installs(fleet: Fleet, bundle_id: str) -> list[tuple[str, str, str]]:
    return [(device_id, app["version"], app["path"]) for device_id in fleet.device_ids()
            for app in fleet.apps(device_id) if app.get("bundle_id") == bundle_id]


@pytest.mark.parametrize("bundle_id", [None, "com.example.demo-tool", "com.microsoft.Word"])
def test_app_inventory_and_version_spread(con: Any, pipeline: Pipeline, bundle_id: str | None) -> None:
    parameters = {"bundle_id": bundle_id} if bundle_id else {}
    installs = _installs(pipeline.fleet, bundle_id or CHROME)
    assert installs, "the simulated fleet must have the app"
    inventory = run(con, "app_inventory", **parameters)
    assert Counter((row["device_id"], row["version"], row["path"]) for row in inventory) == Counter(installs)

    spread = run(con, "app_version_spread", **parameters)
    by_version: dict[str, list[str]] = {}
    for device_id, version, _ in installs:
        by_version.setdefault(version, []).append(device_id)
    expected = [{"version": version, "device_count": len(set(ids)), "install_count": len(ids)}
                for version, ids in by_version.items()]
    assert sorted(spread, key=lambda row: row["version"]) == sorted(expected, key=lambda row: row["version"])
    assert [row["device_count"] for row in spread] == sorted((row["device_count"] for row in spread), reverse=True)


def test_chrome_copies_are_counted_per_install(con: Any, pipeline: Pipeline) -> None:
    per_device = Counter(device_id for device_id, _, _ in _installs(pipeline.fleet, CHROME))
    spread = run(con, "app_version_spread")
    assert sum(row["install_count"] for row in spread) == sum(per_device.values())
    assert max(per_device.values()) >= 1


def test_change_history_of_one_device(con: Any, pipeline: Pipeline) -> None:
    fleet, demo = pipeline.fleet, pipeline.demo
    os_serial = fleet.list_item(demo["os_updated"]["device_id"])["serial_number"]
    rows = run(con, "device_change_history", serial_number=os_serial)
    assert ("device_changed", "os_version", demo["os_updated"]["before"], demo["os_updated"]["after"]) in {
        (row["change_type"], row["change_field"], row["value_before"], row["value_after"]) for row in rows}
    assert all(row["detected_at"].strftime("%Y%m%dT%H%M%SZ") == pipeline.second.snapshot_id for row in rows)

    fv_serial = fleet.list_item(demo["filevault_disabled"]["device_id"])["serial_number"]
    fv_rows = run(con, "device_change_history", serial_number=fv_serial)
    # FileVault off is one fact, seen by Prism (posture) and details alike: high exactly once.
    fv_changes = {(row["change_field"], row["value_before"], row["value_after"], row["change_severity"])
                  for row in fv_rows}
    assert len(fv_changes & {("filevault.filevault_enabled", "true", "false", "high"),
                             ("posture.filevault.status", "true", "false", "high")}) == 1

    app_serial = fleet.list_item(demo["app_updated"]["device_id"])["serial_number"]
    (app_row,) = [row for row in run(con, "device_change_history", serial_number=app_serial)
                  if row["change_type"] == "app_updated"]
    assert (app_row["bundle_id"], app_row["previous_version"], app_row["version"]) == (
        demo["app_updated"]["bundle_id"], demo["app_updated"]["before"], demo["app_updated"]["after"])
    assert app_row["change_field"] is None
    assert run(con, "device_change_history") == []  # the placeholder serial matches nothing


def test_one_device_at_a_time_is_the_latest_snapshot_committed_by_then(con: Any, pipeline: Pipeline) -> None:
    device_id = pipeline.demo["os_updated"]["device_id"]
    serial = pipeline.fleet.list_item(device_id)["serial_number"]

    def at(when: datetime) -> list[dict[str, Any]]:
        return run(con, "device_at_time", serial_number=serial, at=when.strftime("%Y-%m-%dT%H:%M:%SZ"))

    (earlier,) = at(pipeline.now - timedelta(minutes=90))  # between the two snapshots
    (latest,) = at(pipeline.now)
    assert (earlier["snapshot_id"], earlier["os_version"]) == (pipeline.first.snapshot_id,
                                                                pipeline.demo["os_updated"]["before"])
    assert (latest["snapshot_id"], latest["os_version"]) == (pipeline.second.snapshot_id,
                                                              pipeline.demo["os_updated"]["after"])
    assert latest["device_id"] == device_id and latest["details_read_at"] is not None
    assert at(pipeline.now - timedelta(hours=3)) == []  # before the first snapshot
    assert run(con, "device_at_time") == []  # the placeholder serial matches nothing


def test_high_severity_changes_of_the_last_7_days(con: Any, pipeline: Pipeline) -> None:
    high = [event for event in change_events(pipeline.root) if event["severity"] == "high"]
    rows = run(con, "high_severity_changes")
    newest_first = sorted(sorted(high, key=lambda e: e["event_id"]), key=lambda e: e["snapshot_id"], reverse=True)
    assert [row["event_id"] for row in rows] == [event["event_id"] for event in newest_first]
    assert len(rows) >= 2
    serials = {row["serial_number"] for row in rows}
    assert pipeline.demo["removed"]["serial_number"] in serials
    assert pipeline.fleet.list_item(pipeline.demo["filevault_disabled"]["device_id"])["serial_number"] in serials
    filevault = next(row for row in rows if row["change_type"] == "device_changed"
                     and "filevault.filevault_enabled: true -> false" in row["changed_fields"])
    assert filevault["reasons"]


# ---------------------------------------------------------------------------
# Folders the differ has not written to yet, and the text output
# ---------------------------------------------------------------------------
def test_a_folder_without_changes_gives_empty_change_queries(tmp_path: Path) -> None:
    fleet = Fleet.generate(8, seed=2)
    with KandjiSimulator(fleet, token=TOKEN, rate_limit_per_hour=None) as sim:
        collect_with_simulator(sim, LocalObjectStore(tmp_path), datetime.now(timezone.utc))
    assert not (tmp_path / "changes").exists()
    results = local_duckdb.run_all(tmp_path)
    assert set(results) == {query.name for query in athena_sql.QUERIES}
    assert len(results["latest_inventory"]) == 8
    assert results["device_change_history"] == results["high_severity_changes"] == []


def test_a_folder_from_before_committed_snapshots_says_how_to_record_them(pipeline: Pipeline, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(pipeline.root, tmp_path / "old")
    shutil.rmtree(tmp_path / "old" / "snapshots" / "committed_snapshots")
    out = io.StringIO()
    results = local_duckdb.print_report(tmp_path / "old", ["latest_inventory"], out=out)
    assert results["latest_inventory"] == [] and "backfill-committed" in out.getvalue()
    from kandji_snapshots.snapshots.committed import backfill
    from kandji_snapshots.snapshots.storage import LocalObjectStore
    backfill(LocalObjectStore(tmp_path / "old"))
    out = io.StringIO()
    assert len(local_duckdb.print_report(tmp_path / "old", ["latest_inventory"], out=out)["latest_inventory"]) == \
        pipeline.second.table_rows("devices")
    assert "note:" not in out.getvalue()


def test_an_empty_folder_gives_empty_answers_and_a_missing_one_an_error(tmp_path: Path) -> None:
    results = local_duckdb.run_all(tmp_path)
    assert set(results) == {query.name for query in athena_sql.QUERIES}  # every query ran
    assert all(rows == [] for rows in results.values())
    with pytest.raises(FileNotFoundError):
        local_duckdb.connect(tmp_path / "nope")


@pytest.mark.parametrize("query", athena_sql.QUERIES, ids=lambda query: query.name)
def test_every_saved_query_runs_as_written_for_athena(con: Any, query: athena_sql.FleetQuery) -> None:
    """The text DuckDB runs is the Athena text, translated: no second copy of it exists."""
    rows = run(con, query.name)
    cursor = con.execute(local_duckdb.translate(query.athena_sql))
    assert [dict(zip([column[0] for column in cursor.description], row)) for row in cursor.fetchall()] == rows


def test_text_tables_and_the_command_line(pipeline: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"name": "a" * 50, "count": 3, "flag": None, "list": [1, 2]}, {"name": "b\nc", "count": 10}]
    text = local_duckdb.format_table(rows, max_width=10)
    lines = text.splitlines()
    assert lines[0].split(" | ")[0].strip() == "name" and set(lines[1]) <= {"-", "+"}
    assert "aaaaaaaaa…" in lines[2] and "b c" in lines[3] and "[1,2]" in lines[2]
    assert local_duckdb.format_table([]) == "(no rows)"
    assert local_duckdb.format_table(rows, limit=1).endswith("... 1 more rows")

    out = io.StringIO()
    results = local_duckdb.print_report(pipeline.root, ["filevault_off", "app_version_spread"], out=out,
                                       parameters={"bundle_id": "com.microsoft.Word", "unused": "x"})
    printed = out.getvalue()
    assert "== Kandji: Macs with FileVault off:" in printed
    assert "[bundle_id=com.microsoft.Word]" in printed
    assert set(results) == {"filevault_off", "app_version_spread"}

    assert local_duckdb.main([str(pipeline.root), "--query", "agent_missing", "--limit", "3"]) == 0
    assert "Macs without the Kandji agent" in capsys.readouterr().out
    with pytest.raises(TypeError):
        local_duckdb.run_query(pipeline.root, "latest_inventory", bundle_id="x")
    with pytest.raises(KeyError):
        local_duckdb.run_query(pipeline.root, "no_such_query")
