"""Static checks of template.yaml: cfn-lint, the offline SAM transform, and security/wiring invariants.

Everything here runs offline: cfn-lint ships its schemas, and the SAM translator is given a stub
managed-policy loader, a fixed region and a socket that refuses to connect.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from template_model import (
    ALLOWED_MANAGED_POLICIES,
    TEMPLATE_PATH,
    all_iam_statements,
    as_list,
    assert_sse_queue,
    function_role,
    load_event,
    props,
    ref_target,
    referenced_names,
    resolve,
    resolved_resources,
    resources_of_type,
    role_statements,
    transform_template,
)

# Inline Allow statements may use Resource "*" only if ALL their actions are in this set.
GLUE_CATALOG = {"Fn::Sub": "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:catalog"}
ALLOWED_WILDCARD_RESOURCE_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
# The account's own Glue Data Catalog: Glue authorises reading a table on the catalog, its database and the
# table, so the Athena analyst policy names it (the database and tables it names are this stack's).
GLUE_CATALOG = {"Fn::Sub": "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:catalog"}
ANALYST_WORKGROUP = {"Fn::Sub": "arn:${AWS::Partition}:athena:${AWS::Region}:${AWS::AccountId}:"
                                "workgroup/${AWS::StackName}-fleet"}
# Only informational cfn-lint findings tolerated. I4010 is an experimental rule that asks for
# free-text "architecture context" metadata on every resource; it says nothing about correctness.
TOLERATED_LINT_RULES = {"I4010"}

SECRETISH_NAME = re.compile(r"token|passw|api_?key|credential|private_?key", re.IGNORECASE)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
OPAQUE = re.compile(r"^[A-Za-z0-9+/=_\-]{24,}$")


# ---------------------------------------------------------------------------
# Lint and transform
# ---------------------------------------------------------------------------
def test_cfn_lint_reports_no_errors_or_warnings() -> None:
    from cfnlint.api import lint_all  # all regions, all rules incl. informational and experimental

    matches = lint_all(TEMPLATE_PATH.read_text(encoding="utf-8"))
    problems = [
        f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches if m.rule.id not in TOLERATED_LINT_RULES
    ]
    assert problems == []


def test_sam_transform_succeeds_offline_with_existing_secret(sam: dict[str, Any]) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kandji-AbCdEf"
    cfn = transform_template(sam, {"ExistingSecretArn": arn})
    assert resources_of_type(cfn, "AWS::Lambda::Function").keys() == {"CollectorFunction", "DifferFunction",
                                                                      "HistoryFunction", "DigestFunction"}
    created = resolved_resources(cfn, {"ExistingSecretArn": arn})
    assert "KandjiSecret" not in created, "no secret may be created when an existing one is given"


def test_parameter_defaults(sam: dict[str, Any]) -> None:
    params = sam["Parameters"]
    assert int(params["ScheduleIntervalMinutes"]["Default"]) == 60
    assert "ScheduleExpression" not in params, "one schedule parameter: the interval builds the expression"
    assert params["ExistingSecretArn"]["Default"] == ""
    assert params["ExistingSecretKmsKeyArn"]["Default"] == ""
    assert params["KandjiApiUrl"]["Default"] == ""
    assert int(params["SnapshotRetentionDays"]["Default"]) == 730
    assert int(params["MaxEventsPerRun"]["Default"]) == 500
    assert int(params["LogRetentionDays"]["Default"]) == 90
    assert params["LogLevel"]["Default"] == "INFO"


# ---------------------------------------------------------------------------
# Functions and layer
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("function_id", "timeout", "code_dir"),
    [("CollectorFunction", 900, "functions/collector"), ("DifferFunction", 300, "functions/differ")],
)
def test_function_configuration(
    sam: dict[str, Any], cfn: dict[str, Any], function_id: str, timeout: int, code_dir: str
) -> None:
    fn = props(cfn, function_id)
    assert fn["Runtime"] == "python3.13"
    assert fn["Architectures"] == ["arm64"]
    assert fn["Timeout"] == timeout
    assert fn["MemorySize"] == 1024
    assert fn["ReservedConcurrentExecutions"] == 1, "two runs must never overlap"
    assert fn["Handler"] == "app.lambda_handler"
    assert fn["TracingConfig"] == {"Mode": "Active"}
    assert [cfn["Resources"][ref_target(layer)]["Type"] for layer in fn["Layers"]] == ["AWS::Lambda::LayerVersion"]
    assert sam["Resources"][function_id]["Properties"]["CodeUri"] == code_dir
    env = fn["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == "kandji-snapshots"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "KandjiSnapshots"
    assert env["POWERTOOLS_LOG_LEVEL"] == env["LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert env["SNAPSHOT_BUCKET"] == {"Ref": "SnapshotBucket"}


def test_function_specific_environment(cfn: dict[str, Any]) -> None:
    collector = props(cfn, "CollectorFunction")["Environment"]["Variables"]
    assert collector["KANDJI_SECRET_ID"] == {
        "Fn::If": ["CreateSecret", {"Ref": "KandjiSecret"}, {"Ref": "ExistingSecretArn"}]
    }
    assert collector["KANDJI_API_URL"] == {"Ref": "KandjiApiUrl"}
    differ = props(cfn, "DifferFunction")["Environment"]["Variables"]
    assert differ["CHANGES_TOPIC_ARN"] == {"Ref": "ChangesTopic"}
    assert differ["MAX_EVENTS_PER_RUN"] == {"Ref": "MaxEventsPerRun"}


def test_common_layer(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    layer = sam["Resources"]["CommonLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "layers/common"
    assert layer["Metadata"]["BuildMethod"] == "makefile"  # layers/common/Makefile (tests/test_sam_build.py)
    assert layer["Metadata"].get("BuildArchitecture") == "arm64"
    (built,) = resources_of_type(cfn, "AWS::Lambda::LayerVersion").values()
    assert built["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert built["Properties"]["CompatibleArchitectures"] == ["arm64"]


@pytest.mark.parametrize("function_id", ["CollectorFunction", "DifferFunction"])
def test_log_group_with_retention(cfn: dict[str, Any], function_id: str) -> None:
    groups = [
        g["Properties"]
        for g in resources_of_type(cfn, "AWS::Logs::LogGroup").values()
        if g["Properties"].get("LogGroupName") == {"Fn::Sub": f"/aws/lambda/${{{function_id}}}"}
    ]
    assert len(groups) == 1, f"expected one /aws/lambda/<{function_id}> log group"
    assert groups[0]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


@pytest.mark.parametrize(
    ("function_id", "max_retries"), [("CollectorFunction", 0), ("DifferFunction", None)]
)
def test_async_failures_go_to_an_encrypted_queue(cfn: dict[str, Any], function_id: str,
                                                 max_retries: int | None) -> None:
    configs = [
        c["Properties"]
        for c in resources_of_type(cfn, "AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    assert len(configs) == 1, f"{function_id} has no EventInvokeConfig"
    config = configs[0]
    if max_retries is not None:
        assert config["MaximumRetryAttempts"] == max_retries
    on_failure = config["DestinationConfig"]["OnFailure"]["Destination"]
    queue_id = assert_sse_queue(cfn, on_failure)
    assert props(cfn, queue_id)["MessageRetentionPeriod"] == 14 * 24 * 3600
    # The function role can send to exactly that queue.
    sends = [
        s for s in role_statements(cfn["Resources"][function_role(cfn, function_id)])
        if "sqs:SendMessage" in as_list(s["Action"])
    ]
    assert [s["Resource"] for s in sends] == [on_failure]


# ---------------------------------------------------------------------------
# Triggers
# ---------------------------------------------------------------------------
def test_collector_schedule(cfn: dict[str, Any]) -> None:
    schedules = resources_of_type(cfn, "AWS::Scheduler::Schedule")
    # the digest's: test_template_alerts
    assert schedules.keys() == {"CollectorFunctionSchedule", "DigestFunctionDaily", "HistoryFunctionHourly"}
    schedule = schedules["CollectorFunctionSchedule"]["Properties"]
    assert schedule["ScheduleExpression"] == {"Fn::If": ["ScheduleEveryMinute", "rate(1 minute)",
                                                         {"Fn::Sub": "rate(${ScheduleIntervalMinutes} minutes)"}]}
    target = schedule["Target"]
    assert target["Arn"] == {"Fn::GetAtt": ["CollectorFunction", "Arn"]}
    payload = json.loads(target["Input"])
    assert payload["scheduled_time"] == "<aws.scheduler.scheduled-time>"
    assert payload["source"] == "kandji-snapshots.schedule"
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0, "the next scheduled run is the retry"
    dlq_id = assert_sse_queue(cfn, target["DeadLetterConfig"]["Arn"])
    # The scheduler's execution role may invoke exactly the collector and send to exactly its DLQ.
    role = cfn["Resources"][ref_target(target["RoleArn"])]
    granted = {(a, json.dumps(s["Resource"], sort_keys=True))
               for s in role_statements(role) for a in as_list(s["Action"])}
    assert granted == {
        ("lambda:InvokeFunction", json.dumps({"Fn::GetAtt": ["CollectorFunction", "Arn"]})),
        ("sqs:SendMessage", json.dumps({"Fn::GetAtt": [dlq_id, "Arn"]})),
    }


def test_scheduler_event_fixture_matches_schedule_input(cfn: dict[str, Any]) -> None:
    schedule = resources_of_type(cfn, "AWS::Scheduler::Schedule")["CollectorFunctionSchedule"]
    template_input = json.loads(schedule["Properties"]["Target"]["Input"])
    event = load_event("scheduler_event.json")
    assert event.keys() == template_input.keys()
    assert event["source"] == template_input["source"]
    assert datetime.strptime(event["scheduled_time"], "%Y-%m-%dT%H:%M:%SZ")


def _differ_rule(cfn: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rules = {
        lid: r["Properties"]
        for lid, r in resources_of_type(cfn, "AWS::Events::Rule").items()
        if any(t["Arn"] == {"Fn::GetAtt": ["DifferFunction", "Arn"]} for t in r["Properties"]["Targets"])
    }
    assert len(rules) == 1, "the differ must be triggered by exactly one EventBridge rule"
    return next(iter(rules.items()))


def _pattern_matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    from moto.events.models import EventPattern  # moto's offline implementation of EventBridge matching

    return EventPattern.load(json.dumps(pattern)).matches_event(event)


def test_differ_rule_matches_manifests_on_the_snapshot_bucket(cfn: dict[str, Any]) -> None:
    _, rule = _differ_rule(cfn)
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["bucket"]["name"] == [{"Ref": "SnapshotBucket"}]

    event = load_event("manifest_created_event.json")
    bucket = event["detail"]["bucket"]["name"]
    concrete = resolve(pattern, {}, {"SnapshotBucket": bucket})
    assert _pattern_matches(concrete, event), "the sample manifest event must trigger the differ"

    def variant(key: str | None = None, bucket_name: str | None = None, detail_type: str | None = None):
        e = copy.deepcopy(event)
        if key:
            e["detail"]["object"]["key"] = key
        if bucket_name:
            e["detail"]["bucket"]["name"] = bucket_name
        if detail_type:
            e["detail-type"] = detail_type
        return e

    assert _pattern_matches(concrete, variant(key="snapshots/manifests/dt=2027-01-01/20270101T000000Z/manifest.json"))
    for not_a_trigger in (
        variant(key="snapshots/parts/dt=2026-11-23/20261123T100000Z/part-00001.jsonl.gz"),
        variant(key="snapshots/manifests/dt=2026-11-23/20261123T100000Z/manifest.json.tmp"),
        variant(key="changes/dt=2026-11-23/20261123T100000Z/manifest.json"),
        variant(bucket_name="someone-elses-bucket"),
        variant(detail_type="Object Deleted"),
    ):
        assert not _pattern_matches(concrete, not_a_trigger), not_a_trigger["detail"]


def test_differ_rule_retries_and_dead_letters(cfn: dict[str, Any]) -> None:
    rule_id, rule = _differ_rule(cfn)
    (target,) = rule["Targets"]
    assert "MaximumRetryAttempts" in target["RetryPolicy"]
    dlq_id = assert_sse_queue(cfn, target["DeadLetterConfig"]["Arn"])
    policies = [
        p["Properties"]["PolicyDocument"]
        for p in resources_of_type(cfn, "AWS::SQS::QueuePolicy").values()
        if {"Ref": dlq_id} in p["Properties"]["Queues"]
    ]
    assert len(policies) == 1, f"{dlq_id} needs exactly one queue policy"
    allows = [s for s in policies[0]["Statement"] if s["Effect"] == "Allow"]
    assert allows == [
        {
            "Sid": allows[0].get("Sid"),
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": [dlq_id, "Arn"]},
            "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}},
        }
    ], "only the differ's rule may send to its DLQ"


def test_every_queue_denies_non_tls(cfn: dict[str, Any]) -> None:
    guarded = set()
    for policy in resources_of_type(cfn, "AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement.get("Condition") == {
                "Bool": {"aws:SecureTransport": "false"}
            }:
                guarded |= {ref_target(r) for r in as_list(statement["Resource"])}
    assert set(resources_of_type(cfn, "AWS::SQS::Queue")) - guarded == set()


def test_bucket_notifies_eventbridge_only(cfn: dict[str, Any]) -> None:
    for lid, bucket in resources_of_type(cfn, "AWS::S3::Bucket").items():
        notification = bucket["Properties"].get("NotificationConfiguration", {})
        for direct in ("LambdaConfigurations", "QueueConfigurations", "TopicConfigurations"):
            assert direct not in notification, f"{lid} has S3 {direct}; use EventBridge"
    assert props(cfn, "SnapshotBucket")["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    for lid, permission in resources_of_type(cfn, "AWS::Lambda::Permission").items():
        assert permission["Properties"]["Principal"] != "s3.amazonaws.com", f"{lid} lets S3 invoke a function"


# ---------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------
def test_snapshot_bucket_is_private_encrypted_versioned_and_retained(cfn: dict[str, Any]) -> None:
    resource = cfn["Resources"]["SnapshotBucket"]
    bucket = resource["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    # Default parameters (SSE-S3); the optional KMS key is tested in test_template_security.py.
    (sse,) = resolved_resources(cfn)["SnapshotBucket"]["Properties"]["BucketEncryption"][
        "ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms", "aws:kms:dsse"}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"


def test_snapshot_bucket_policy_denies_non_tls(cfn: dict[str, Any]) -> None:
    policies = [
        p["Properties"]["PolicyDocument"]
        for p in resources_of_type(cfn, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": "SnapshotBucket"}
    ]
    assert len(policies) == 1
    denies = [
        s for s in policies[0]["Statement"]
        if s["Effect"] == "Deny"
        and s["Principal"] in ("*", {"AWS": "*"})
        and "s3:*" in as_list(s["Action"])
        and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert len(denies) == 1, "missing Deny s3:* when aws:SecureTransport is false"
    assert {json.dumps(r, sort_keys=True) for r in as_list(denies[0]["Resource"])} == {
        json.dumps({"Fn::GetAtt": ["SnapshotBucket", "Arn"]}),
        json.dumps({"Fn::Sub": "${SnapshotBucket.Arn}/*"}),
    }


def _lifecycle(cfn: dict[str, Any], **overrides: str) -> dict[str, dict[str, Any]]:
    bucket = resolved_resources(cfn, overrides)["SnapshotBucket"]["Properties"]
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert all(r["Status"] == "Enabled" for r in rules)
    return {r.get("Prefix") or r.get("Filter", {}).get("Prefix", ""): r for r in rules}


def test_lifecycle_expires_snapshots_and_changes(cfn: dict[str, Any]) -> None:
    rules = _lifecycle(cfn, SnapshotRetentionDays="400")
    assert rules["snapshots/"]["ExpirationInDays"] == "400"
    assert rules["changes/"]["ExpirationInDays"] == "400"
    everything = rules[""]
    assert everything["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    assert int(everything["NoncurrentVersionExpiration"]["NoncurrentDays"]) == 30


def test_lifecycle_retention_zero_keeps_forever(cfn: dict[str, Any]) -> None:
    rules = _lifecycle(cfn, SnapshotRetentionDays="0")
    assert not any("ExpirationInDays" in r or "ExpirationDate" in r for r in rules.values())
    assert "AbortIncompleteMultipartUpload" in rules[""]


# ---------------------------------------------------------------------------
# Topic
# ---------------------------------------------------------------------------
def test_changes_topic_uses_customer_managed_key(cfn: dict[str, Any]) -> None:
    topic = props(cfn, "ChangesTopic")
    key_id = ref_target(topic["KmsMasterKeyId"])
    assert key_id in cfn["Resources"], "KmsMasterKeyId must be a key of this stack (not alias/aws/sns)"
    key = cfn["Resources"][key_id]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    sns_grants = [
        s for s in key["Properties"]["KeyPolicy"]["Statement"] if s.get("Principal") == {"Service": "sns.amazonaws.com"}
    ]
    assert sns_grants, "SNS must be granted the key to deliver the topic's encrypted messages"
    for grant in sns_grants:
        assert "aws:SourceAccount" in json.dumps(grant.get("Condition", {}))
    # The differ can use exactly that key and publish to exactly that topic (default parameters: the
    # optional snapshot bucket key is tested in test_template_security.py).
    differ = role_statements(resolved_resources(cfn)[function_role(cfn, "DifferFunction")])
    kms = [s for s in differ if any(a.startswith("kms:") for a in as_list(s["Action"]))]
    assert [(sorted(as_list(s["Action"])), s["Resource"]) for s in kms] == [
        (["kms:Decrypt", "kms:GenerateDataKey"], {"Fn::GetAtt": [key_id, "Arn"]})
    ]
    publish = [s for s in differ if any(a.startswith("sns:") for a in as_list(s["Action"]))]
    assert [(as_list(s["Action"]), s["Resource"]) for s in publish] == [(["sns:Publish"], {"Ref": "ChangesTopic"})]


def test_changes_topic_policy(cfn: dict[str, Any]) -> None:
    policies = [
        p["Properties"]["PolicyDocument"]
        for p in resources_of_type(cfn, "AWS::SNS::TopicPolicy").values()
        if {"Ref": "ChangesTopic"} in p["Properties"]["Topics"]
    ]
    assert len(policies) == 1
    statements = policies[0]["Statement"]
    differ_role = {"Fn::GetAtt": [function_role(cfn, "DifferFunction"), "Arn"]}
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert [(s["Principal"], as_list(s["Action"])) for s in allows] == [({"AWS": differ_role}, ["sns:Publish"])]
    assert any(
        s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
    ), "topic policy must deny publishing without TLS"
    assert any(
        s["Effect"] == "Deny"
        and s.get("Condition") == {"ArnNotEquals": {"aws:PrincipalArn": differ_role}}
        and "sns:Publish" in as_list(s["Action"])
        for s in statements
    ), "topic policy must deny publishing by anyone but the differ"


# ---------------------------------------------------------------------------
# IAM: least privilege
# ---------------------------------------------------------------------------
def test_no_wildcard_actions_or_resources_in_any_role(cfn: dict[str, Any]) -> None:
    all_statements = all_iam_statements(cfn)
    assert {"CollectorFunctionRole", "DifferFunctionRole"} <= all_statements.keys()
    known = set(cfn["Resources"]) | set(cfn.get("Parameters", {}))
    problems = []
    for owner, statements in all_statements.items():
        for statement in statements:
            if statement["Effect"] != "Allow":
                continue
            where = f"{owner}/{statement.get('Sid', statement.get('Action'))}"
            if "NotAction" in statement or "NotResource" in statement:
                problems.append(f"{where}: NotAction/NotResource grants too much")
                continue
            actions = as_list(statement["Action"])
            problems += [f"{where}: wildcard action {a!r}" for a in actions if "*" in a]
            for resource in as_list(statement["Resource"]):
                if resource == GLUE_CATALOG:
                    continue  # the account's Data Catalog: Glue asks for it beside the database and table
                if resource == "*":
                    if not set(actions) <= ALLOWED_WILDCARD_RESOURCE_ACTIONS:
                        problems.append(f"{where}: Resource '*' for {actions}")
                elif resource == GLUE_CATALOG:
                    continue  # Glue asks for the account's catalog beside a database and its tables
                elif resource == ANALYST_WORKGROUP:
                    continue  # this stack's workgroup, by the name it gives it (test_athena_template checks)
                elif not (referenced_names(resource) & known):
                    problems.append(f"{where}: resource {resource!r} is not scoped to this stack or a parameter")
    assert problems == []


def test_only_allowlisted_managed_policies(cfn: dict[str, Any]) -> None:
    attached = set()
    for role in resources_of_type(cfn, "AWS::IAM::Role").values():
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            text = arn if isinstance(arn, str) else json.dumps(arn)
            attached.add(text.split(":policy/", 1)[1].rstrip('"}'))
    assert attached <= ALLOWED_MANAGED_POLICIES, attached - ALLOWED_MANAGED_POLICIES


def _secrets_manager_grants(cfn: dict[str, Any], overrides: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    resources = resolved_resources(cfn, overrides)
    grants = []
    for lid, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role":
            grants += [
                (lid, s) for s in role_statements(resource)
                if any(a.lower().startswith("secretsmanager:") for a in as_list(s.get("Action", [])))
            ]
    return grants


def test_collector_reads_exactly_the_created_secret(cfn: dict[str, Any]) -> None:
    grants = _secrets_manager_grants(cfn, {})
    assert [(lid, as_list(s["Action"]), s["Resource"]) for lid, s in grants] == [
        ("CollectorFunctionRole", ["secretsmanager:GetSecretValue"], {"Ref": "KandjiSecret"})
    ]
    secret = resolved_resources(cfn)["KandjiSecret"]["Properties"]
    assert "SecretString" not in secret and "GenerateSecretString" not in secret, "the secret must be created empty"
    assert "put-secret-value" in secret["Description"]


def test_collector_reads_exactly_an_existing_secret_and_its_key(cfn: dict[str, Any]) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kandji/api-Xy12Zq"
    key = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    grants = _secrets_manager_grants(cfn, {"ExistingSecretArn": arn})
    assert [(lid, as_list(s["Action"]), s["Resource"]) for lid, s in grants] == [
        ("CollectorFunctionRole", ["secretsmanager:GetSecretValue"], arn)
    ]

    def kms_statements(overrides: dict[str, str]) -> list[dict[str, Any]]:
        role = resolved_resources(cfn, overrides)["CollectorFunctionRole"]
        return [s for s in role_statements(role) if any(a.startswith("kms:") for a in as_list(s["Action"]))]

    assert kms_statements({}) == []
    assert kms_statements({"ExistingSecretArn": arn}) == []
    (decrypt,) = kms_statements({"ExistingSecretArn": arn, "ExistingSecretKmsKeyArn": key})
    assert as_list(decrypt["Action"]) == ["kms:Decrypt"]
    assert decrypt["Resource"] == key


def test_no_token_parameters_or_environment_values(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    def secret_like(value: Any) -> bool:
        text = value if isinstance(value, str) else json.dumps(value)
        return bool(
            "token" in text.lower()
            or UUID.search(text)
            or OPAQUE.match(text)
            or "{{resolve:secretsmanager" in text
            or "{{resolve:ssm-secure" in text
            or text.startswith("eyJ")
        )

    problems = []
    for name, param in sam["Parameters"].items():
        if SECRETISH_NAME.search(name):
            problems.append(f"parameter {name}")
        if param.get("NoEcho"):
            problems.append(f"parameter {name} is NoEcho (secrets belong in Secrets Manager)")
        if "Default" in param and secret_like(str(param["Default"])):
            problems.append(f"parameter {name} default {param['Default']!r}")
    for lid, fn in resources_of_type(cfn, "AWS::Lambda::Function").items():
        for name, value in fn["Properties"].get("Environment", {}).get("Variables", {}).items():
            if SECRETISH_NAME.search(name):
                problems.append(f"{lid} env {name}")
            if secret_like(value):
                problems.append(f"{lid} env {name}={value!r}")
    assert problems == []


def test_outputs(cfn: dict[str, Any]) -> None:
    assert {
        "SnapshotBucketName",
        "ChangesTopicArn",
        "KandjiSecretArn",
        "CollectorFunctionName",
        "DifferFunctionName",
        "CollectorFailureQueueUrl",
        "DifferFailureQueueUrl",
    } <= cfn["Outputs"].keys()
    assert cfn["Outputs"]["KandjiSecretArn"]["Value"] == {
        "Fn::If": ["CreateSecret", {"Ref": "KandjiSecret"}, {"Ref": "ExistingSecretArn"}]
    }


def test_collector_settings_parameters_reach_its_environment(sam: dict[str, Any]) -> None:
    from kandji_snapshots.settings import DEFAULT_HOURLY_RESERVE, DEFAULT_REQUEST_BUDGET

    variables = sam["Resources"]["CollectorFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["KANDJI_APPS_SOURCE"] == {"Ref": "AppsSource"}
    assert variables["KANDJI_REQUEST_BUDGET"] == {"Ref": "RequestBudgetPerRun"}
    assert variables["KANDJI_HOURLY_RESERVE"] == {"Ref": "HourlyRequestReserve"}
    assert variables["KANDJI_MAX_FLEET_DROP_PERCENT"] == {"Ref": "MaxFleetDropPercent"}
    parameters = sam["Parameters"]
    assert parameters["RequestBudgetPerRun"]["Default"] == DEFAULT_REQUEST_BUDGET
    assert parameters["HourlyRequestReserve"]["Default"] == DEFAULT_HOURLY_RESERVE
    assert parameters["AppsSource"]["AllowedValues"] == ["per-device", "prism", "auto"]


def test_the_layer_pins_boto3_with_the_botocore_its_tracer_dependency_brings() -> None:
    """aws-xray-sdk installs botocore into the layer, ahead of the runtime's boto3: ship a matched, tested pair."""
    from importlib import metadata

    layer = (Path(__file__).resolve().parent.parent / "layers" / "common" / "requirements.txt").read_text()
    pins = dict(line.split("==") for line in layer.splitlines() if "==" in line and not line.startswith("#"))
    assert pins.get("boto3") == metadata.version("boto3")  # the tests run against what ships
