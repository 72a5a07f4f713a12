"""template.yaml: the optional chat topic and daily digest (issue 14), off by default and least-privilege."""

from __future__ import annotations

import json
from typing import Any

import pytest
from template_model import (
    KMS_KEY,
    as_list,
    function_role,
    props,
    resolved_resources,
    role_statements,
    snapshot_key_grants,
)

CHAT = {"ChatNotifications": "Enabled"}
DIGEST = {"DailyDigest": "Enabled"}
CHAT_RESOURCES = {"ChatTopic", "ChatTopicPolicy"}
DIGEST_RESOURCES = {"DigestFunction", "DigestFunctionRole", "DigestFunctionDaily", "DigestLogGroup", "DigestTopic",
                    "DigestTopicPolicy"}


def grants(role: dict[str, Any]) -> set[tuple[str, str]]:
    return {(action, json.dumps(statement["Resource"], sort_keys=True))
            for statement in role_statements(role) if statement["Effect"] == "Allow"
            for action in as_list(statement["Action"])}


def test_both_are_off_by_default(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    assert sam["Parameters"]["ChatNotifications"]["Default"] == "Disabled"
    assert sam["Parameters"]["DailyDigest"]["Default"] == "Disabled"
    assert sam["Parameters"]["DailyDigestSchedule"]["Default"] == "cron(0 7 * * ? *)"
    created = resolved_resources(cfn)
    assert not (CHAT_RESOURCES | DIGEST_RESOURCES) & created.keys()
    differ = created["DifferFunction"]["Properties"]
    assert "CHAT_TOPIC_ARN" not in differ["Environment"]["Variables"]
    differ_grants = grants(created[function_role(cfn, "DifferFunction")])
    assert ("sns:Publish", json.dumps({"Ref": "ChatTopic"})) not in differ_grants


@pytest.mark.parametrize("overrides, expected", [(CHAT, CHAT_RESOURCES), (DIGEST, DIGEST_RESOURCES)])
def test_each_parameter_creates_its_resources(cfn: dict[str, Any], overrides: dict, expected: set) -> None:
    created = resolved_resources(cfn, overrides)
    assert expected <= created.keys()
    assert not ((CHAT_RESOURCES | DIGEST_RESOURCES) - expected) & created.keys()


@pytest.mark.parametrize("topic", ["ChatTopic", "DigestTopic"])
def test_the_topics_use_the_changes_topic_key(cfn: dict[str, Any], topic: str) -> None:
    assert props(cfn, topic)["KmsMasterKeyId"] == {"Fn::GetAtt": ["ChangesTopicKey", "Arn"]}


def test_the_differ_may_publish_to_the_chat_topic_and_nothing_more(cfn: dict[str, Any]) -> None:
    created = resolved_resources(cfn, CHAT)
    differ = created["DifferFunction"]["Properties"]["Environment"]["Variables"]
    assert differ["CHAT_TOPIC_ARN"] == {"Ref": "ChatTopic"}
    assert differ["ATHENA_WORKGROUP"] == {"Ref": "AthenaWorkGroup"}
    assert differ["ATHENA_DATABASE"] == {"Ref": "AthenaDatabase"}
    published = {resource for action, resource in grants(created[function_role(cfn, "DifferFunction")])
                 if action.startswith("sns:")}
    assert published == {json.dumps({"Ref": "ChangesTopic"}), json.dumps({"Ref": "ChatTopic"})}
    assert_only_publisher(created["ChatTopicPolicy"], "ChatTopic", function_role(cfn, "DifferFunction"))


def test_the_digest_reads_changes_marks_its_days_and_publishes_its_topic_only(cfn: dict[str, Any]) -> None:
    created = resolved_resources(cfn, DIGEST)
    role = created[function_role(cfn, "DigestFunction")]
    assert grants(role) == {
        ("s3:GetObject", json.dumps({"Fn::Sub": "arn:${AWS::Partition}:s3:::${SnapshotBucket}/changes/*"})),
        # its "sent" markers only: never the changes files (no delete either)
        ("s3:PutObject", json.dumps({"Fn::Sub": "arn:${AWS::Partition}:s3:::${SnapshotBucket}/changes/_digests/*"})),
        ("s3:ListBucket", json.dumps({"Fn::GetAtt": ["SnapshotBucket", "Arn"]}, sort_keys=True)),
        ("sns:Publish", json.dumps({"Ref": "DigestTopic"})),
        ("kms:GenerateDataKey", json.dumps({"Fn::GetAtt": ["ChangesTopicKey", "Arn"]})),
        ("kms:Decrypt", json.dumps({"Fn::GetAtt": ["ChangesTopicKey", "Arn"]})),
    }
    [listing] = [s for s in role_statements(role) if s.get("Sid") == "ListChanges"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["changes/*"]}}
    assert_only_publisher(created["DigestTopicPolicy"], "DigestTopic", function_role(cfn, "DigestFunction"))
    variables = created["DigestFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["DIGEST_TOPIC_ARN"] == {"Ref": "DigestTopic"}


def test_the_digest_runs_once_a_day_in_utc(cfn: dict[str, Any]) -> None:
    schedule = resolved_resources(cfn, DIGEST)["DigestFunctionDaily"]["Properties"]
    assert schedule["ScheduleExpression"] == "cron(0 7 * * ? *)"  # DailyDigestSchedule's default
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": ["DigestFunction", "Arn"]}
    assert json.loads(schedule["Target"]["Input"]) == {}  # the handler digests yesterday


def assert_only_publisher(policy: dict[str, Any], topic: str, role: str) -> None:
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    principal = {"Fn::GetAtt": [role, "Arn"]}
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert [(s["Principal"], s["Action"], s["Resource"]) for s in allows] == [
        ({"AWS": principal}, "sns:Publish", {"Ref": topic})]
    conditions = [s.get("Condition") for s in statements if s["Effect"] == "Deny"]
    assert {"ArnNotEquals": {"aws:PrincipalArn": principal}} in conditions
    assert {"Bool": {"aws:SecureTransport": "false"}} in conditions


def test_the_digest_marker_is_where_the_digest_may_write(cfn: dict[str, Any]) -> None:
    """The one object the digest writes, under the prefix its role may write; with a bucket key, it may encrypt."""
    from kandji_snapshots.snapshots.layout import digest_marker_key

    assert digest_marker_key("2026-11-23") == "changes/_digests/2026-11-23.json"
    [statement] = snapshot_key_grants(cfn, {**DIGEST, "SnapshotBucketKmsKeyArn": KMS_KEY})["DigestFunctionRole"]
    assert sorted(as_list(statement["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"]
