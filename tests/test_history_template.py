"""The history copy in template.yaml: its Glue tables match history/tables.py, its saved queries are
history/queries.py's text, and its function may do exactly what the copy needs (cfn-lint and checkov run
over the whole template in tests/test_template.py and tests/test_template_security.py)."""

from __future__ import annotations

from typing import Any

import pytest
from template_model import as_list, function_role, props, resources_of_type, role_statements

from kandji_snapshots.history.queries import HISTORY_QUERIES
from kandji_snapshots.history.tables import BUCKET_COLUMN, BUCKET_COUNT, HISTORY_TABLES, PARTITION_KEYS
from kandji_snapshots.snapshots.layout import HISTORY_PREFIX, history_table_prefix

SUB = "Fn::Sub"


def glue_table(cfn: dict[str, Any], name: str) -> dict[str, Any]:
    [table] = [r["Properties"]["TableInput"] for r in resources_of_type(cfn, "AWS::Glue::Table").values()
               if r["Properties"]["TableInput"]["Name"] == name]
    return table


def history_statements(cfn: dict[str, Any]) -> list[dict[str, Any]]:
    return role_statements(cfn["Resources"][function_role(cfn, "HistoryFunction")])


def granted(cfn: dict[str, Any], action: str) -> list[Any]:
    return [resource for statement in history_statements(cfn) if action in as_list(statement["Action"])
            for resource in as_list(statement["Resource"])]


def s3_object(prefix: str) -> dict[str, str]:
    return {SUB: f"arn:${{AWS::Partition}}:s3:::${{SnapshotBucket}}/{prefix}*"}


@pytest.mark.parametrize("table", HISTORY_TABLES, ids=lambda table: table.name)
def test_each_history_table_is_parquet_partitioned_by_snapshot_and_bucketed_by_device(cfn, table):
    glue = glue_table(cfn, table.name)
    storage = glue["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in storage["Columns"]] == list(table.hive_columns().items())
    assert [key["Name"] for key in glue["PartitionKeys"]] == list(PARTITION_KEYS)
    assert storage["Location"] == {SUB: f"s3://${{SnapshotBucket}}/{history_table_prefix(table.name)}"}
    assert storage["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert storage["BucketColumns"] == [BUCKET_COLUMN] and storage["NumberOfBuckets"] == BUCKET_COUNT
    # Partitions are registered by the INSERT that commits them, never projected: a failed copy stays unseen.
    assert not any(key.startswith("projection.") for key in glue["Parameters"])


def test_the_saved_history_queries_are_the_module_s_text(cfn):
    saved = {r["Properties"]["Name"]: r["Properties"]
             for r in resources_of_type(cfn, "AWS::Athena::NamedQuery").values()}
    for query in HISTORY_QUERIES:
        assert saved[query.title]["QueryString"] == query.athena_sql
        assert saved[query.title]["Description"] == query.description
        assert saved[query.title]["WorkGroup"] == {"Ref": "AthenaWorkGroup"}


def test_the_function_runs_hourly_alone_in_the_workgroup(cfn):
    function = props(cfn, "HistoryFunction")
    assert function["ReservedConcurrentExecutions"] == 1  # the copier's rules assume one run at a time
    assert function["Timeout"] == 900 and function["Handler"] == "app.lambda_handler"
    env = function["Environment"]["Variables"]
    assert (env["SNAPSHOT_BUCKET"], env["ATHENA_WORKGROUP"], env["ATHENA_DATABASE"]) == (
        {"Ref": "SnapshotBucket"}, {"Ref": "AthenaWorkGroup"}, {"Ref": "AthenaDatabase"})
    schedule = props(cfn, "HistoryFunctionHourly")
    assert schedule["ScheduleExpression"] == "rate(1 hour)"
    assert schedule["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == 0


def test_the_function_starts_queries_in_the_stack_s_workgroup_only(cfn):
    workgroup = {SUB: "arn:${AWS::Partition}:athena:${AWS::Region}:${AWS::AccountId}:workgroup/${AthenaWorkGroup}"}
    assert granted(cfn, "athena:StartQueryExecution") == [workgroup]
    assert granted(cfn, "athena:GetQueryExecution") == [workgroup]


def test_the_function_writes_and_deletes_under_history_only(cfn):
    history = s3_object(HISTORY_PREFIX)
    results = {SUB: "${AthenaResultsBucket.Arn}/results/*"}
    assert granted(cfn, "s3:DeleteObject") == [history]
    assert sorted(map(str, granted(cfn, "s3:PutObject"))) == sorted(map(str, [history, results]))
    reads = granted(cfn, "s3:GetObject")
    assert s3_object("snapshots/manifests/") in reads and s3_object("snapshots/device_posture/") in reads
    assert s3_object("snapshots/") not in reads and s3_object("changes/") not in reads


def test_the_function_registers_partitions_of_the_history_tables_only(cfn):
    # Athena registers a copied partition with BatchCreatePartition (which ones a role needs is proven by
    # tests/test_iam_least_privilege.py); whatever may write partitions names the history tables only.
    for action in ("glue:CreatePartition", "glue:BatchCreatePartition", "glue:UpdatePartition"):
        tables = [r[SUB].rsplit("/", 1)[1] for r in granted(cfn, action) if "table/" in r[SUB]]
        assert set(tables) <= {table.name for table in HISTORY_TABLES}, action
    assert sorted(r[SUB].rsplit("/", 1)[1] for r in granted(cfn, "glue:BatchCreatePartition") if "table/" in r[SUB]) \
        == sorted(table.name for table in HISTORY_TABLES)
    assert not any(action.startswith("glue:Delete") or action in ("glue:UpdateTable", "glue:CreateTable")
                   for statement in history_statements(cfn) for action in as_list(statement["Action"]))


def test_the_copy_expires_with_the_snapshots_it_copies(cfn):
    rules = props(cfn, "SnapshotBucket")["LifecycleConfiguration"]["Rules"]
    history = [rule for rule in rules if isinstance(rule, dict) and "Fn::If" in rule
               and rule["Fn::If"][1].get("Prefix") == HISTORY_PREFIX]
    assert [rule["Fn::If"][1]["ExpirationInDays"] for rule in history] == [{"Ref": "SnapshotRetentionDays"}]
