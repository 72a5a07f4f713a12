"""The Glue/Athena part of template.yaml: tables, views, partition projection, workgroup, results bucket,
saved queries, the analyst policy.

Offline, like test_template.py (whose transform and lint helpers are reused): the SAM
transform must keep these resources as written, and the views and saved queries must be
query/athena_sql.py's Athena SQL, verbatim, both ways; every text parses in sqlglot's Athena
dialect (tests/test_local_queries.py runs them).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import sqlglot
from sqlglot import exp
from template_model import (
    as_list,
    resolved_resources,
    resources_of_type,
    transform_template,
)

from kandji_snapshots.history.queries import HISTORY_QUERIES
from kandji_snapshots.history.tables import HISTORY_TABLES
from kandji_snapshots.query import athena_sql
from kandji_snapshots.snapshots import layout
from kandji_snapshots.snapshots.timeutil import partition_date

TABLES = ("devices", "device_details", "device_apps", "device_posture", "committed_snapshots", "changes",
          "audit_events", "threats", "vulnerability_detections", "vulnerabilities", "users", "blueprints")
# Tables whose parts a snapshot writes before its manifest: read only through committed_snapshots.
SNAPSHOT_TABLES = ("devices", "device_details", "device_apps", "device_posture", "audit_events", "threats",
                   "vulnerability_detections", "vulnerabilities", "users", "blueprints")
VIEWS = {view.name: view for view in athena_sql.VIEWS}
HISTORY_TABLE_NAMES = {table.name for table in HISTORY_TABLES}
SNAPSHOT_ID = "20261123T101500Z"
KMS_KEY = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"




def glue_tables(cfn: dict[str, Any], kind: str = "EXTERNAL_TABLE") -> dict[str, dict[str, Any]]:
    """Table name -> TableInput, of the tables (EXTERNAL_TABLE) or the views (VIRTUAL_VIEW); the history
    tables are tests/test_history_template.py's."""
    return {r["Properties"]["TableInput"]["Name"]: r["Properties"]["TableInput"]
            for r in resources_of_type(cfn, "AWS::Glue::Table").values()
            if r["Properties"]["TableInput"]["TableType"] == kind
            and r["Properties"]["TableInput"]["Name"] not in HISTORY_TABLE_NAMES}


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
    assert len(resources_of_type(other, "AWS::Athena::NamedQuery")) == len(athena_sql.QUERIES) + len(HISTORY_QUERIES)


def test_one_database_the_tables_and_the_views(cfn: dict[str, Any]) -> None:
    (database_id, database), = resources_of_type(cfn, "AWS::Glue::Database").items()
    assert database["Properties"]["CatalogId"] == {"Ref": "AWS::AccountId"}
    assert database["Properties"]["DatabaseInput"]["Name"] == {"Ref": "AthenaDatabaseName"}
    tables = resources_of_type(cfn, "AWS::Glue::Table")
    assert sorted(glue_tables(cfn)) == sorted(TABLES)
    assert sorted(glue_tables(cfn, "VIRTUAL_VIEW")) == sorted(VIEWS)
    assert len(tables) == len(TABLES) + len(VIEWS) + len(HISTORY_TABLE_NAMES)
    for table in tables.values():
        assert table["Properties"]["DatabaseName"] == {"Ref": database_id}
        assert table["Properties"]["CatalogId"] == {"Ref": "AWS::AccountId"}


@pytest.mark.parametrize("table", TABLES)
def test_tables_read_gzip_json_lines_with_the_hive_json_serde(cfn: dict[str, Any], table: str) -> None:
    table_input = glue_tables(cfn)[table]
    storage = table_input["StorageDescriptor"]
    assert storage["InputFormat"] == "org.apache.hadoop.mapred.TextInputFormat"  # reads .gz transparently
    assert storage["OutputFormat"] == "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
    # AWS's recommended JSON SerDe: a malformed line fails the query instead of turning into a NULL row
    # (no OpenX option such as ignore.malformed.json to get wrong).
    assert storage["SerdeInfo"] == {"SerializationLibrary": "org.apache.hive.hcatalog.data.JsonSerDe"}
    assert table_input["Parameters"]["classification"] == "json"
    assert table_input["Parameters"]["compressionType"] == "gzip"
    names = [column["Name"] for column in storage["Columns"]]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names), "Glue column names are lower case"
    assert "dt" not in names, "dt is the partition key, not a data column"
    assert names == list(athena_sql.hive_columns(table)), "columns (and their order) follow the schema"


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
    elif table == "committed_snapshots":
        keys = [layout.committed_key(SNAPSHOT_ID)]
    else:
        keys = [layout.table_part_key(table, SNAPSHOT_ID, None), layout.table_part_key(table, SNAPSHOT_ID, 3)]
    for key in keys:
        assert f"s3://my-bucket/{key}".rsplit("/", 1)[0] + "/" == folder
    assert location.endswith("/dt=${dt}/")
    root = render_sub(table_input["StorageDescriptor"]["Location"], bucket)
    assert location.startswith(root) and root == f"s3://my-bucket/{athena_sql.TABLE_PREFIXES[table]}"
    # Nothing but data below a table's dt= folders: manifests and the differ's markers live elsewhere.
    assert not layout.manifest_key(SNAPSHOT_ID).startswith(root.removeprefix("s3://my-bucket/"))
    assert table == "committed_snapshots" or not layout.committed_key(SNAPSHOT_ID).startswith(
        root.removeprefix("s3://my-bucket/"))
    assert not layout.published_marker_prefix(SNAPSHOT_ID).startswith(f"{athena_sql.TABLE_PREFIXES[table]}dt=")


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
    encryption = {overrides: resolved_resources(cfn, dict(overrides))["AthenaWorkGroup"]["Properties"][
        "WorkGroupConfiguration"]["ResultConfiguration"]["EncryptionConfiguration"]
        for overrides in ((), (("SnapshotBucketKmsKeyArn", KMS_KEY),))}
    assert encryption[()] == {"EncryptionOption": "SSE_S3"}
    # Results hold the data: under the data's own key when the bucket has one.
    assert encryption[(("SnapshotBucketKmsKeyArn", KMS_KEY),)] == {"EncryptionOption": "SSE_KMS", "KmsKey": KMS_KEY}
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
    assert cfn["Outputs"]["AthenaAnalystPolicyArn"]["Value"] == {"Ref": "AthenaAnalystPolicy"}
    grouped = {name for group in sam["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
               for name in group["Parameters"]}
    assert {name for name in parameters if name.startswith("Athena")} <= grouped


# ---------------------------------------------------------------------------
# Views == athena_sql.VIEWS, both ways
# ---------------------------------------------------------------------------
def presto_view(table_input: dict[str, Any], database: str) -> dict[str, Any]:
    """The Presto view document Athena reads from ViewOriginalText, as CloudFormation renders it."""
    separator, (prefix, encoded, suffix) = table_input["ViewOriginalText"]["Fn::Join"]
    assert (separator, prefix, suffix) == ("", "/* Presto View: ", " */")
    text = render_sub(encoded["Fn::Base64"], {"AthenaDatabase": database})
    assert base64.b64decode(base64.b64encode(text.encode())).decode() == text
    return json.loads(text)


def test_every_view_is_an_athena_sql_view_and_back(cfn: dict[str, Any]) -> None:
    views = glue_tables(cfn, "VIRTUAL_VIEW")
    assert sorted(views) == sorted(VIEWS), "template.yaml and athena_sql.VIEWS list different views"
    for name, table_input in views.items():
        view = VIEWS[name]
        assert table_input["Parameters"] == {"presto_view": "true", "comment": "Presto View"}
        assert table_input["ViewExpandedText"] == "/* Presto View */"
        assert table_input["Description"] == view.description
        document = presto_view(table_input, "fleet_db")
        assert document["originalSql"] == view.sql, f"{name}: originalSql != athena_sql"
        assert (document["catalog"], document["schema"]) == ("awsdatacatalog", "fleet_db")
        # Athena checks the declared columns against what the SQL returns: the table's columns and dt.
        columns = view.columns()
        assert list(columns) == [*athena_sql.TABLE_COLUMNS[view.table], "dt"]
        assert document["columns"] == [{"name": column, "type": athena_sql.presto_type(kind)}
                                       for column, kind in columns.items()]
        assert table_input["StorageDescriptor"]["Columns"] == [{"Name": column, "Type": kind.hive()}
                                                               for column, kind in columns.items()]


def test_presto_types_follow_the_hive_types() -> None:
    user = athena_sql.TABLE_COLUMNS["devices"]["user"]
    assert athena_sql.presto_type(user) == "row(email varchar,name varchar,id varchar,is_archived boolean)"
    assert athena_sql.presto_type(athena_sql.TABLE_COLUMNS["devices"]["tags"]) == "array(varchar)"
    assert athena_sql.presto_type(athena_sql.TABLE_COLUMNS["committed_snapshots"]["device_count"]) == "bigint"


# ---------------------------------------------------------------------------
# Saved queries == athena_sql.py, both ways
# ---------------------------------------------------------------------------
def named_queries(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    queries = [r["Properties"] for r in resources_of_type(cfn, "AWS::Athena::NamedQuery").values()
               if r["Properties"]["Name"] not in {query.title for query in HISTORY_QUERIES}]
    by_name = {q["Name"]: q for q in queries}
    assert len(by_name) == len(queries), "two saved queries share a name"
    return by_name


def test_every_saved_query_is_an_athena_sql_query_and_back(cfn: dict[str, Any]) -> None:
    saved = named_queries(cfn)
    module = {query.title: query for query in athena_sql.QUERIES}
    assert len(module) == len(athena_sql.QUERIES), "two saved queries share a title"
    assert sorted(saved) == sorted(module), "template.yaml and athena_sql.py list different queries"
    for title, query in module.items():
        assert saved[title]["QueryString"] == query.athena_sql, f"{title}: QueryString != athena_sql"
        assert saved[title]["Description"] == query.description
        assert saved[title]["Database"] == {"Ref": "AthenaDatabase"}
        assert saved[title]["WorkGroup"] == {"Ref": "AthenaWorkGroup"}


def test_the_issue_s_questions_are_all_saved(cfn: dict[str, Any]) -> None:
    names = {query.name for query in athena_sql.QUERIES}
    assert {"latest_inventory", "not_checked_in", "filevault_off", "agent_missing", "app_inventory",
            "app_version_spread", "device_change_history", "high_severity_changes", "device_at_time",
            "firewall_off", "sip_disabled", "secure_boot_reduced", "gatekeeper_off", "activation_lock_on"} <= names
    assert len(athena_sql.QUERIES) == len(names)


TEXTS = [pytest.param(query.athena_sql, id=query.name) for query in athena_sql.QUERIES] + [
    pytest.param(view.sql, id=view.name) for view in athena_sql.VIEWS]


def parsed(sql: str) -> exp.Expression:
    (tree,) = sqlglot.parse(sql, read="athena", error_level=sqlglot.ErrorLevel.RAISE)
    return tree


@pytest.mark.parametrize("sql", TEXTS)
def test_every_text_parses_in_athena_s_dialect(sql: str) -> None:
    tree = parsed(sql)
    assert isinstance(tree, exp.Query), "one SELECT statement"
    # Trino spreads an UNNESTed row over several columns and DuckDB does not: the texts unnest into one.
    for unnest in tree.find_all(exp.Unnest):
        alias = unnest.args.get("alias")
        assert alias is None or len(alias.columns) <= 1, f"UNNEST ... AS t(...) with several columns: {unnest.sql()}"


def _reads(tree: exp.Expression) -> dict[str, str]:
    """Alias (or name) -> table, for every Glue table or view the text reads (CTE names excluded)."""
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    return {(table.alias or table.name): table.name for table in tree.find_all(exp.Table)
            if table.name and table.name not in ctes}


@pytest.mark.parametrize("sql", TEXTS)
def test_snapshot_tables_are_read_only_through_committed_snapshots(sql: str) -> None:
    tables = set(_reads(parsed(sql)).values())
    assert tables <= set(athena_sql.TABLE_COLUMNS) | set(VIEWS), tables
    if tables & set(SNAPSHOT_TABLES):
        assert "committed_snapshots" in tables, "a snapshot table read without committed_snapshots"


@pytest.mark.parametrize("sql", TEXTS)
def test_every_table_read_is_bounded_by_dt(sql: str) -> None:
    """Each Glue table a text reads is filtered on its dt partition, so projection prunes the other days."""
    tree = parsed(sql)
    bounded = set()
    for node in tree.find_all(exp.GTE, exp.Between):
        column = node.this
        if isinstance(column, exp.Column) and column.name == "dt":
            bounded.add(column.table)
    for alias, table in _reads(tree).items():
        if table in athena_sql.TABLE_COLUMNS:
            assert (alias if alias != table else "") in bounded or alias in bounded, \
                f"{table} {alias} is read without a dt bound (it would scan every day)"


@pytest.mark.parametrize("query", athena_sql.QUERIES, ids=lambda query: query.name)
def test_placeholders_and_parameters(query: athena_sql.FleetQuery) -> None:
    assert query.athena_sql == query.athena_sql.strip() and "\t" not in query.athena_sql
    # `$.key` is a JSON path; `$name` would be a DuckDB parameter, which Athena named queries do not take.
    assert re.search(r"\$\w", query.athena_sql) is None, "Athena named queries take no parameters: use an example value"
    for parameter in query.parameters:
        assert parameter.athena_placeholder in query.athena_sql
        replaced = query.with_values(**{parameter.name: "9" if parameter.name == "days" else
                                        "2025-01-01T00:00:00Z" if parameter.name == "at" else "it's"})
        assert parameter.athena_placeholder not in replaced
        parsed(replaced)  # a value never breaks the text: quoted, or checked
    with pytest.raises(TypeError):
        query.with_values(no_such_parameter="x")


def test_values_that_are_not_what_a_parameter_takes_are_refused() -> None:
    with pytest.raises(ValueError):
        athena_sql.STALE_DAYS.render("14 DAY) OR (1=1")
    with pytest.raises(ValueError):
        athena_sql.AT_TIME.render("yesterday")
    assert athena_sql.SERIAL.render("C02'X") == "'C02''X'"


# ---------------------------------------------------------------------------
# The read-only analyst policy
# ---------------------------------------------------------------------------
def test_the_analyst_policy_reads_the_fleet_and_writes_only_query_results(cfn: dict[str, Any]) -> None:
    resources = resolved_resources(cfn, {"SnapshotBucketKmsKeyArn": KMS_KEY})
    statements = resources["AthenaAnalystPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert all(statement["Effect"] == "Allow" for statement in statements)
    grants = {(action, json.dumps(resource, sort_keys=True)) for statement in statements
              for action in as_list(statement["Action"]) for resource in as_list(statement["Resource"])}
    writes = {action for action, resource in grants
              if action.split(":")[1].startswith(("Put", "Delete", "Create", "Update", "Abort"))}
    assert writes == {"s3:PutObject", "s3:AbortMultipartUpload"}
    assert {resource for action, resource in grants if action in writes} == {
        json.dumps({"Fn::Sub": "${AthenaResultsBucket.Arn}/results/*"})}
    workgroup = json.dumps({"Fn::Sub": "arn:${AWS::Partition}:athena:${AWS::Region}:${AWS::AccountId}:"
                                       "workgroup/${AWS::StackName}-fleet"})
    # The names are spelled out (a Ref inside these Subs makes cfn-lint take minutes): they must be the ones
    # the workgroup and the database get.
    assert cfn["Resources"]["AthenaWorkGroup"]["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-fleet"}
    assert cfn["Resources"]["AthenaDatabase"]["Properties"]["DatabaseInput"]["Name"] == {"Ref": "AthenaDatabaseName"}
    assert {resource for action, resource in grants if action.startswith("glue:")} == {json.dumps(
        {"Fn::Sub": f"arn:${{AWS::Partition}}:glue:${{AWS::Region}}:${{AWS::AccountId}}:{name}"}) for name in (
        "catalog", "database/${AthenaDatabaseName}", "table/${AthenaDatabaseName}/*")}
    assert {resource for action, resource in grants if action.startswith("athena:")} == {workgroup}
    assert ("athena:StartQueryExecution", workgroup) in grants
    assert {action for action, resource in grants if "SnapshotBucket" in resource} <= {
        "s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"}
    assert {(action, resource) for action, resource in grants if action.startswith("kms:")} == {
        ("kms:Decrypt", json.dumps(KMS_KEY)), ("kms:GenerateDataKey", json.dumps(KMS_KEY))}
    without_key = resolved_resources(cfn, {})["AthenaAnalystPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert not any(action.startswith("kms:") for statement in without_key for action in as_list(statement["Action"]))
