"""The history handler as deployed: S3 and Glue are moto, the collector handler commits a snapshot of the
simulator's fleet (and a killed run leaves parts without a manifest), then the history handler starts one
Athena INSERT per history table for the committed snapshot only, reading exactly the manifest's files, and a
second run starts nothing new.

Athena is a recording stand-in at the boto3 client: moto 5.2.5 speaks Athena's old JSON protocol, the pinned
botocore its REST one. What the INSERTs do is tests/test_history_local.py's (the DuckDB twin)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from athena_stand_in import RecordingAthena
from aws_helpers import BUCKET, all_keys, create_bucket, manifests
from conftest import load_handler
from handler_pipeline import start

from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.history.tables import HISTORY_TABLES
from kandji_snapshots.snapshots.layout import table_part_key
from simulator import Fleet

ROOT = Path(__file__).resolve().parent.parent
SCHEDULER_EVENT = json.loads((ROOT / "events" / "scheduler_event.json").read_text())
DATABASE, WORKGROUP = "kandji_test", "kandji-test-fleet"


def create_history_tables(glue) -> None:
    glue.create_database(DatabaseInput={"Name": DATABASE})
    for table in HISTORY_TABLES:
        glue.create_table(DatabaseName=DATABASE, TableInput={
            "Name": table.name, "PartitionKeys": [{"Name": "dt", "Type": "string"},
                                                  {"Name": "snapshot_id", "Type": "string"}],
            "StorageDescriptor": {"Columns": [{"Name": name, "Type": kind}
                                              for name, kind in table.hive_columns().items()]}})


@pytest.fixture
def athena(monkeypatch) -> RecordingAthena:
    recording, real_client = RecordingAthena(), boto3.client
    monkeypatch.setattr(boto3, "client",
                        lambda name, *a, **k: recording if name == "athena" else real_client(name, *a, **k))
    return recording


@pytest.fixture
def deployment(aws, athena, monkeypatch):
    create_bucket()
    for name, value in {"SNAPSHOT_BUCKET": BUCKET, "ATHENA_WORKGROUP": WORKGROUP, "ATHENA_DATABASE": DATABASE,
                        "KANDJI_ALLOW_INSECURE_LOCALHOST": "true", "KANDJI_MAX_REQUESTS_PER_SECOND": "1000"}.items():
        monkeypatch.setenv(name, value)


def test_the_handler_copies_the_committed_snapshot_once_and_never_a_killed_run(deployment, athena, lambda_context,
                                                                               monkeypatch):
    create_history_tables(boto3.client("glue"))
    sim = start(Fleet.generate(60, seed=5), monkeypatch)
    try:
        result = load_handler("collector").lambda_handler(SCHEDULER_EVENT, lambda_context)
    finally:
        sim.stop()
    [manifest] = manifests()
    killed = "20991231T235959Z"  # parts of a run killed before its manifest: the newest, uncommitted
    boto3.client("s3").put_object(Bucket=BUCKET, Key=table_part_key("device_posture", killed, 0), Body=b"{}\n")

    history = load_handler("history").lambda_handler
    report = history({}, lambda_context)
    assert report["copied"] == len(HISTORY_TABLES) and not report["stopped_early"]
    assert {(r["WorkGroup"], r["QueryExecutionContext"]["Database"]) for r in athena.started} == {(WORKGROUP, DATABASE)}
    statements = [request["QueryString"] for request in athena.started]
    assert sorted(s.split("\n")[0] for s in statements) == sorted(f"INSERT INTO {t.name}" for t in HISTORY_TABLES)
    for table in HISTORY_TABLES:
        [sql] = [s for s in statements if s.startswith(f"INSERT INTO {table.name}\n")]
        assert f"t.snapshot_id = '{result['snapshot_id']}'" in sql and killed not in sql
        files = ", ".join(f"'s3://{BUCKET}/{key}'" for key in manifest["tables"][table.source]["keys"])
        assert f't."$path" IN ({files})' in sql
    assert len(all_keys(BUCKET, "history/_attempts/")) == len(HISTORY_TABLES)

    again = history({}, lambda_context)  # moto registers no partition: the noted, succeeded queries count
    assert again["copied"] == 0 and len(athena.started) == len(HISTORY_TABLES)


def test_the_handler_says_which_table_is_missing(deployment, lambda_context):
    with pytest.raises(ConfigurationError, match="devices_history does not exist"):
        load_handler("history").lambda_handler({}, lambda_context)


def test_glue_partitions_are_what_counts_as_copied(deployment):
    from kandji_snapshots.history.aws import GluePartitionCatalog

    glue = boto3.client("glue")
    create_history_tables(glue)
    glue.batch_create_partition(DatabaseName=DATABASE, TableName="devices_history", PartitionInputList=[
        {"Values": ["2026-11-20", "20261120T100000Z"]}, {"Values": ["2026-11-23", "20261123T100000Z"]}])
    catalog = GluePartitionCatalog(glue, DATABASE)
    assert catalog.copied_snapshots("devices_history", "2026-11-21") == {"20261123T100000Z"}
    assert catalog.copied_snapshots("device_apps_history", "2026-11-21") == set()
