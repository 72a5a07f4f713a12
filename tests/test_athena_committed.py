"""Athena you can trust, on data the handlers wrote: committed snapshots only, posture first, unknown apart.

The collector and differ handlers run against the Kandji simulator and moto's S3 (as in
test_pipeline_end_to_end); the bucket is then copied to a folder and every saved query and view
runs there, as Athena's text translated for DuckDB (query/local_duckdb.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_helpers import BUCKET, all_keys, manifests
from conftest import load_handler
from handler_pipeline import SCHEDULER_EVENT, collect_and_diff, start

from kandji_snapshots.collect import collector as collector_module
from kandji_snapshots.query import athena_sql, local_duckdb
from kandji_snapshots.snapshots import layout
from kandji_snapshots.snapshots.storage import LocalObjectStore
from simulator import Fleet


def download(root: Path) -> Path:
    """The bucket as a local folder, key for key."""
    store, s3 = LocalObjectStore(root), boto3.client("s3")
    for key in all_keys():
        store.put(key, s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return root


def answers(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every saved query's rows and every view's rows."""
    con = local_duckdb.connect(root)
    result = {query.name: local_duckdb.run_query(con, query) for query in athena_sql.QUERIES}
    for view in athena_sql.VIEWS:
        result[view.name] = local_duckdb.query_rows(con, f"SELECT * FROM {view.name} ORDER BY ALL")
    return result


def macs(fleet: Fleet) -> list[str]:
    return [device_id for device_id in fleet.device_ids() if fleet.platform(device_id) == "Mac"]


class LambdaTimeout(BaseException):
    """What a Lambda killed at its timeout looks like to the run: it stops, and no clean-up runs."""


def test_a_run_killed_before_its_manifest_changes_no_answer(deployment, lambda_context, monkeypatch,  # noqa: F811
                                                            tmp_path):
    fleet = Fleet.generate(40, seed=41)
    sim = start(fleet, monkeypatch)
    try:
        collect_and_diff(lambda_context)
        fleet.apply_demo_changes()
        collect_and_diff(lambda_context)
        before = answers(download(tmp_path / "before"))

        # The next run sees a very different fleet, writes every part, and is killed before its manifest.
        for device_id in macs(fleet):
            sim.prism.set(device_id, "filevault", status=False)
            sim.prism.set(device_id, "application_firewall", status=False)
            sim.prism.set(device_id, "startup_settings", sip=False)
        fleet.remove(fleet.device_ids()[0])

        def killed(store, manifest):
            raise LambdaTimeout("Task timed out after 900.00 seconds")

        monkeypatch.setattr(collector_module, "write_manifest", killed)
        monkeypatch.setattr(collector_module.SnapshotCollector, "_discard", lambda self, writers: None)
        # A snapshot id of its own: a run starting in the second of a committed one waits for the next
        # (SnapshotCollector._new_snapshot_id).
        with pytest.raises(LambdaTimeout):
            load_handler("collector").lambda_handler(SCHEDULER_EVENT, lambda_context)
    finally:
        sim.stop()

    committed = {manifest["snapshot_id"] for manifest in manifests()}
    orphans = {key.rsplit("/", 1)[-1][:16] for key in all_keys(prefix="snapshots/devices/")} - committed
    assert len(orphans) == 1, "the killed run's parts are in the bucket, without a manifest"
    (orphan,) = orphans
    for table in layout.TABLE_NAMES:
        assert any(orphan in key for key in all_keys(prefix=f"snapshots/{table}/")), table
    assert not any(orphan in key for key in all_keys(prefix=layout.COMMITTED_PREFIX))

    root = download(tmp_path / "after")
    after = answers(root)
    assert after == before, [name for name in before if after[name] != before[name]]
    # ... although reading the tables by max(snapshot_id), as the queries did before, finds the orphan:
    con = local_duckdb.connect(root)
    assert con.execute("SELECT max(snapshot_id) FROM devices").fetchone()[0] == orphan
    assert len(before["filevault_off"]) < len(macs(fleet))


def test_security_queries_read_posture_every_run_even_when_details_were_not_reread(  # noqa: F811
        deployment, lambda_context, monkeypatch, tmp_path):
    fleet = Fleet.generate(40, seed=42)
    sim = start(fleet, monkeypatch)
    try:
        collect_and_diff(lambda_context)
        on = [device_id for device_id in macs(fleet) if fleet.details(device_id)["filevault"]["filevault_enabled"]]
        firewall, sip = on[-1], on[-2]
        for device_id in on[:-2]:
            fleet.set_filevault(device_id, False)  # Prism reports it at once; details only when re-read
        sim.prism.set(firewall, "application_firewall", status=False)
        sim.prism.set(sip, "startup_settings", sip=False)
        # A budget that re-reads few details: most devices' details are carried from the first run.
        monkeypatch.setenv("KANDJI_REQUEST_BUDGET", "14")
        collect_and_diff(lambda_context)
        prism_off = {category: {row["device_id"] for row in sim.prism.rows(category) if row[column] is False}
                     for category, column in (("application_firewall", "status"), ("startup_settings", "sip"))}
    finally:
        sim.stop()
    root = download(tmp_path / "bucket")
    con = local_duckdb.connect(root)
    details = {row["device_id"]: row for row in local_duckdb.query_rows(
        con, "SELECT device_id, fetched_at, filevault.filevault_enabled AS enabled FROM latest_device_details")}
    stale = [device_id for device_id in on[:-2] if details[device_id]["enabled"] is True]
    assert stale, "some Macs' details were not re-read this run: they still say FileVault is on"

    filevault = {row["device_id"]: row for row in local_duckdb.run_query(con, "filevault_off")}
    assert {device_id for device_id, row in filevault.items() if row["status"] == "off"} == {
        device_id for device_id in macs(fleet) if fleet.details(device_id)["filevault"]["filevault_enabled"] is False}
    assert set(on[:-2]) <= set(filevault)
    assert all(filevault[device_id]["source"] == "prism" for device_id in stale)
    firewall_rows = local_duckdb.run_query(con, "firewall_off")
    assert {row["device_id"] for row in firewall_rows if row["status"] == "off"} == prism_off["application_firewall"]
    assert firewall in prism_off["application_firewall"]
    sip_rows = local_duckdb.run_query(con, "sip_disabled")
    assert {row["device_id"] for row in sip_rows if row["status"] == "off"} == prism_off["startup_settings"]
    assert sip in prism_off["startup_settings"]
    assert not any(row["status"] == "unknown" for row in firewall_rows + sip_rows), "Prism read every Mac"


def test_unknown_is_listed_apart_from_off(deployment, lambda_context, monkeypatch, tmp_path):  # noqa: F811
    fleet = Fleet.generate(30, seed=43)
    sim = start(fleet, monkeypatch)
    try:
        collect_and_diff(lambda_context)
        # Prism's FileVault and startup categories become unreadable, and new Macs arrive whose details the
        # budget does not reach: the Macs read before keep Prism's last read (carried), the new ones have no
        # FileVault anywhere but in the details that were read, and no SIP (Prism only) at all.
        sim.permissions -= {"prism_filevault", "prism_startup_settings"}
        new = [fleet.enroll("Mac") for _ in range(4)]
        monkeypatch.setenv("KANDJI_REQUEST_BUDGET", "10")
        collect_and_diff(lambda_context)
    finally:
        sim.stop()
    root = download(tmp_path / "bucket")
    con = local_duckdb.connect(root)
    pending = {row[0] for row in con.execute(
        "SELECT device_id FROM latest_device_details WHERE fetched_at IS NULL").fetchall()}
    assert pending and pending <= set(new)

    filevault = local_duckdb.run_query(con, "filevault_off")
    unknown = {row["device_id"] for row in filevault if row["status"] == "unknown"}
    assert unknown == pending
    off = {row["device_id"] for row in filevault if row["status"] == "off"}
    assert off == {device_id for device_id in macs(fleet) if device_id not in pending
                   and fleet.details(device_id)["filevault"]["filevault_enabled"] is False}
    assert all(row["source"] == "prism" for row in filevault if row["status"] == "off")  # carried from the last read
    statuses = [row["status"] for row in filevault]
    assert statuses == sorted(statuses), "off first, then unknown"

    sip = local_duckdb.run_query(con, "sip_disabled")
    assert {row["device_id"] for row in sip if row["status"] == "unknown"} == set(new)
