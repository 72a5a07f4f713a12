"""The Glue/Athena part of template.yaml: tables, partition projection, workgroup, results bucket, saved queries.

Offline, like test_template.py (whose transform and lint helpers are reused): the SAM
transform must keep these resources as written, and the saved queries must be
fleet_queries.py's Athena SQL, verbatim, both ways.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from kandji_snapshots.query import fleet_queries
from kandji_snapshots.snapshots import layout
from kandji_snapshots.snapshots.timeutil import partition_date
from template_model import (
    as_list,
    resolved_resources,
    resources_of_type,
    transform_template,
)

TABLES = ("devices", "device_details", "device_apps", "device_posture", "changes")
SNAPSHOT_ID = "20261123T101500Z"




def glue_tables(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Table name -> TableInput."""
    return {r["Properties"]["TableInput"]["Name"]: r["Properties"]["TableInput"]
            for r in resources_of_type(cfn, "AWS::Glue::Table").values()}


def render_sub(node: Any, values: dict[str, str]) -> str:
    """A `Fn::Sub` string with ${Name} replaced and ${!x} kept as the literal ${x}, as CloudFormation does."""
    assert set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str), node
    text = node["Fn::Sub"]
    text = re.sub(r"\$\{(?!!)([^}]+)\}", lambda m: values[m.group(1)], text)
    return text.replace("${!", "${")


# ---------------------------------------------------------------------------
# Database and tables
# ---------------------------------------------------------------------------
def test_the_sam_transform_keeps_the_athena_resources(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    kinds = ("AWS::Glue::Database", "AWS::Glue::Table", "AWS::Athena::WorkGroup", "AWS::Athena::NamedQuery")
    for kind in kinds:
        written = {lid: r for lid, r in sam["Resources"].items() if r["Type"] == kind}
        assert written, f"no {kind} in template.yaml"
        assert resources_of_type(cfn, kind) == written, f"the SAM transform changed the {kind} resources"
    # ... and with a non-default parameter set too.
    other = transform_template(sam, {"AthenaProjectionStartDate": "2026-06-01", "AthenaDatabaseName": "fleet_x"})
    assert len(resources_of_type(other, "AWS::Athena::NamedQuery")) == len(fleet_queries.QUERIES)


def test_one_database_and_the_four_tables(cfn: dict[str, Any]) -> None:
    (database_id, database), = resources_of_type(cfn, "AWS::Glue::Database").items()
    assert database["Properties"]["CatalogId"] == {"Ref": "AWS::AccountId"}
    assert database["Properties"]["DatabaseInput"]["Name"] == {"Ref": "AthenaDatabaseName"}
    tables = resources_of_type(cfn, "AWS::Glue::Table")
    assert sorted(glue_tables(cfn)) == sorted(TABLES)
    for table in tables.values():
        assert table["Properties"]["DatabaseName"] == {"Ref": database_id}
        assert table["Properties"]["CatalogId"] == {"Ref": "AWS::AccountId"}
        assert table["Properties"]["TableInput"]["TableType"] == "EXTERNAL_TABLE"


@pytest.mark.parametrize("table", TABLES)
def test_tables_read_gzip_json_lines_with_the_openx_serde(cfn: dict[str, Any], table: str) -> None:
    table_input = glue_tables(cfn)[table]
    storage = table_input["StorageDescriptor"]
    assert storage["InputFormat"] == "org.apache.hadoop.mapred.TextInputFormat"  # reads .gz transparently
    assert storage["OutputFormat"] == "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
    serde = storage["SerdeInfo"]
    assert serde["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    # A malformed line must fail the query, not turn into a row of NULLs; keys match column names exactly.
    assert serde["Parameters"]["ignore.malformed.json"] == "false"
    assert serde["Parameters"]["case.insensitive"] == "false"
    assert serde["Parameters"].get("use.null.for.invalid.data", "false") == "false"
    assert table_input["Parameters"]["classification"] == "json"
    assert table_input["Parameters"]["compressionType"] == "gzip"
    names = [column["Name"] for column in storage["Columns"]]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names), "Glue column names are lower case"
    assert "dt" not in names, "dt is the partition key, not a data column"
    assert names == list(fleet_queries.hive_columns(table)), "columns (and their order) follow the schema"


@pytest.mark.parametrize("table", TABLES)
def test_dt_partitions_are_projected_not_crawled(cfn: dict[str, Any], table: str) -> None:
    table_input = glue_tables(cfn)[table]
    assert table_input["PartitionKeys"] == [
        {"Name": "dt", "Type": "string", "Comment": table_input["PartitionKeys"][0].get("Comment")}]
    parameters = table_input["Parameters"]
    assert parameters["projection.enabled"] == "true"
    assert parameters["projection.dt.type"] == "date"
    assert parameters["projection.dt.format"] == "yyyy-MM-dd"
    assert parameters["projection.dt.interval"] == "1"
    assert parameters["projection.dt.interval.unit"] == "DAYS"
    assert render_sub(parameters["projection.dt.range"], {"AthenaProjectionStartDate": "2025-01-01"}) == \
        "2025-01-01,NOW"

    # The projected location of a day is exactly where the writers put that day's files.
    bucket = {"SnapshotBucket": "my-bucket"}
    location = render_sub(parameters["storage.location.template"], bucket)
    day = partition_date(SNAPSHOT_ID)
    folder = location.replace("${dt}", day)
    if table == "changes":
        keys = [layout.changes_key(SNAPSHOT_ID)]
    else:
        keys = [layout.table_part_key(table, SNAPSHOT_ID, None), layout.table_part_key(table, SNAPSHOT_ID, 3)]
    for key in keys:
        assert f"s3://my-bucket/{key}".rsplit("/", 1)[0] + "/" == folder
    assert location.endswith("/dt=${dt}/")
    root = render_sub(table_input["StorageDescriptor"]["Location"], bucket)
    assert location.startswith(root) and root == f"s3://my-bucket/{fleet_queries.TABLE_PREFIXES[table]}"
    # Nothing but data below a table's dt= folders: manifests and the differ's markers live elsewhere.
    assert not layout.manifest_key(SNAPSHOT_ID).startswith(root.removeprefix("s3://my-bucket/"))
    assert not layout.published_marker_prefix(SNAPSHOT_ID).startswith(f"{fleet_queries.TABLE_PREFIXES[table]}dt=")


def test_projection_start_date_parameter(sam: dict[str, Any]) -> None:
    parameter = sam["Parameters"]["AthenaProjectionStartDate"]
    assert parameter["Type"] == "String"
    assert parameter["Default"] == "2025-01-01"
    assert re.fullmatch(parameter["AllowedPattern"], parameter["Default"])
    assert not re.fullmatch(parameter["AllowedPattern"], "2025/01/01")
    name = sam["Parameters"]["AthenaDatabaseName"]
    assert re.fullmatch(name["AllowedPattern"], name["Default"])
    assert not re.fullmatch(name["AllowedPattern"], "Kandji-Snapshots")


# ---------------------------------------------------------------------------
# Workgroup and its results bucket
# ---------------------------------------------------------------------------
def test_workgroup_enforces_encrypted_results_in_its_bucket(cfn: dict[str, Any]) -> None:
    (workgroup,) = resources_of_type(cfn, "AWS::Athena::WorkGroup").values()
    configuration = workgroup["Properties"]["WorkGroupConfiguration"]
    assert configuration["EnforceWorkGroupConfiguration"] is True
    assert configuration["PublishCloudWatchMetricsEnabled"] is True
    assert configuration["BytesScannedCutoffPerQuery"] == {"Ref": "AthenaBytesScannedCutoffPerQuery"}
    assert configuration["EngineVersion"] == {"SelectedEngineVersion": "Athena engine version 3"}
    results = configuration["ResultConfiguration"]
    assert results["EncryptionConfiguration"] == {"EncryptionOption": "SSE_S3"}
    assert results["OutputLocation"] == {"Fn::Sub": "s3://${AthenaResultsBucket}/results/"}
    assert results["ExpectedBucketOwner"] == {"Ref": "AWS::AccountId"}
    assert workgroup["Properties"]["State"] == "ENABLED"


def test_results_bucket_is_private_encrypted_tls_only_and_expires(cfn: dict[str, Any]) -> None:
    resource = cfn["Resources"]["AthenaResultsBucket"]
    bucket = resource["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    (sse,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert "NotificationConfiguration" not in bucket
    (rule,) = resolved_resources(cfn, {"AthenaResultsRetentionDays": "30"})["AthenaResultsBucket"]["Properties"][
        "LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and rule["ExpirationInDays"] == "30"
    assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"]

    policies = [p["Properties"]["PolicyDocument"] for p in resources_of_type(cfn, "AWS::S3::BucketPolicy").values()
                if p["Properties"]["Bucket"] == {"Ref": "AthenaResultsBucket"}]
    assert len(policies) == 1
    denies = [s for s in policies[0]["Statement"]
              if s["Effect"] == "Deny" and s["Principal"] in ("*", {"AWS": "*"}) and "s3:*" in as_list(s["Action"])
              and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
    assert len(denies) == 1
    assert {json.dumps(r, sort_keys=True) for r in as_list(denies[0]["Resource"])} == {
        json.dumps({"Fn::GetAtt": ["AthenaResultsBucket", "Arn"]}),
        json.dumps({"Fn::Sub": "${AthenaResultsBucket.Arn}/*"}),
    }
    assert not any(s["Effect"] == "Allow" for s in policies[0]["Statement"]), "access is granted by IAM only"


def test_athena_parameters_and_outputs(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    parameters = sam["Parameters"]
    assert int(parameters["AthenaResultsRetentionDays"]["Default"]) == 30
    assert int(parameters["AthenaBytesScannedCutoffPerQuery"]["Default"]) >= 10_000_000  # Athena's minimum
    assert cfn["Outputs"]["AthenaWorkGroupName"]["Value"] == {"Ref": "AthenaWorkGroup"}
    assert cfn["Outputs"]["AthenaGlueDatabaseName"]["Value"] == {"Ref": "AthenaDatabase"}
    assert cfn["Outputs"]["AthenaResultsBucketName"]["Value"] == {"Ref": "AthenaResultsBucket"}
    grouped = {name for group in sam["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
               for name in group["Parameters"]}
    assert {name for name in parameters if name.startswith("Athena")} <= grouped


# ---------------------------------------------------------------------------
# Saved queries == fleet_queries.py, both ways
# ---------------------------------------------------------------------------
def named_queries(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    queries = [r["Properties"] for r in resources_of_type(cfn, "AWS::Athena::NamedQuery").values()]
    by_name = {q["Name"]: q for q in queries}
    assert len(by_name) == len(queries), "two saved queries share a name"
    return by_name


def test_every_saved_query_is_a_fleet_query_and_back(cfn: dict[str, Any]) -> None:
    saved = named_queries(cfn)
    module = {query.title: query for query in fleet_queries.QUERIES}
    assert len(module) == len(fleet_queries.QUERIES), "two fleet queries share a title"
    assert sorted(saved) == sorted(module), "template.yaml and fleet_queries.py list different queries"
    for title, query in module.items():
        assert saved[title]["QueryString"] == query.athena_sql, f"{title}: QueryString != athena_sql"
        assert saved[title]["Description"] == query.description
        assert saved[title]["Database"] == {"Ref": "AthenaDatabase"}
        assert saved[title]["WorkGroup"] == {"Ref": "AthenaWorkGroup"}


def test_the_issue_s_questions_are_all_saved(cfn: dict[str, Any]) -> None:
    names = {query.name for query in fleet_queries.QUERIES}
    assert {"latest_inventory", "not_checked_in", "filevault_off", "agent_missing", "app_inventory",
            "app_version_spread", "device_change_history", "high_severity_changes"} <= names
    assert len(fleet_queries.QUERIES) == len(names)


_TABLE_REFERENCE = re.compile(r"\b(?:FROM|JOIN)\s+(devices|device_details|device_apps|changes)\b(?:\s+(?!ON\b|WHERE\b|"
                              r"JOIN\b|LEFT\b|CROSS\b|GROUP\b|ORDER\b)([a-z]\w*))?", re.IGNORECASE)


@pytest.mark.parametrize("query", fleet_queries.QUERIES, ids=lambda query: query.name)
def test_every_athena_query_reads_only_the_days_it_asks_for(query: fleet_queries.FleetQuery) -> None:
    """Each table a query reads is filtered on dt with a bound, so projection prunes the other days."""
    references = _TABLE_REFERENCE.findall(query.athena_sql)
    assert references, "the query reads no table"
    for table, alias in references:
        column = f"{alias}.dt" if alias else "dt"
        bound = re.search(rf"(?<![\w.]){re.escape(column)} >= CAST\(current_date - INTERVAL '\d+' DAY AS varchar\)",
                          query.athena_sql)
        assert bound, f"{query.name}: {table} {alias} is read without a dt >= ... filter (it would scan every day)"


@pytest.mark.parametrize("query", fleet_queries.QUERIES, ids=lambda query: query.name)
def test_placeholders_and_parameters(query: fleet_queries.FleetQuery) -> None:
    assert query.athena_sql == query.athena_sql.strip() and "\t" not in query.athena_sql
    assert "$" not in query.athena_sql, "Athena named queries take no parameters: use an example value"
    for parameter in query.parameters:
        assert parameter.athena_placeholder in query.athena_sql
        assert f"${parameter.name}" in query.duckdb_sql
    assert set(re.findall(r"\$(\w+)", query.duckdb_sql)) == {p.name for p in query.parameters}
