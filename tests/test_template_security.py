"""Security posture of template.yaml: checkov, the optional bucket KMS key and access logs, exact IAM grants.

checkov (pinned in requirements-dev.txt) runs on the SAM template as written AND on the offline-transformed
CloudFormation template, so the resources SAM generates (function roles, the scheduler's role, the Lambda
functions themselves) are checked too. No check may fail; a check is skipped only in the resource's Metadata
(`checkov: skip: - id: ... comment: ...`) with a written reason, and EXPECTED_SKIPS below lists every one of
them, so adding a skip is a reviewed change of this file.

checkov never reaches the network here: it runs in a subprocess whose sockets refuse to connect (an attempt
fails the test), with --skip-download and BC_SKIP_MAPPING=TRUE (no platform policies or guideline mappings).
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from typing import Any

import pytest
from checkov_scan import LOG_BUCKET, RESOLVED_BUCKETS, pinned_checkov_version
from template_model import (
    KMS_KEY,
    TEMPLATE_PATH,
    as_list,
    resolved_resources,
    role_statements,
    snapshot_key_grants,
    transform_template,
)

from tests.cfn_yaml import load_template

# (check id, resource as checkov names it without the type) -> skipped in both scans unless noted.
# The reasons live next to the resources in template.yaml; this list only pins which skips exist.
EXPECTED_SKIPS = {
    ("CKV_AWS_116", "CollectorFunction"),  # OnFailure destination instead of a DLQ
    ("CKV_AWS_117", "CollectorFunction"),  # needs the internet (Kandji); no VPC
    ("CKV_AWS_173", "CollectorFunction"),  # no secret in the environment
    ("CKV_AWS_116", "DifferFunction"),
    ("CKV_AWS_117", "DifferFunction"),
    ("CKV_AWS_173", "DifferFunction"),
    ("CKV_AWS_116", "DigestFunction"),  # once a day; the next day's run (or a rerun with "day") redoes it
    ("CKV_AWS_117", "DigestFunction"),
    ("CKV_AWS_173", "DigestFunction"),
    ("CKV_AWS_116", "HistoryFunction"),  # hourly; the next run cleans up and redoes a failed copy
    ("CKV_AWS_117", "HistoryFunction"),
    ("CKV_AWS_173", "HistoryFunction"),
    ("CKV_AWS_158", "CollectorLogGroup"),  # CloudWatch Logs' own encryption at rest
    ("CKV_AWS_158", "DifferLogGroup"),
    ("CKV_AWS_158", "DigestLogGroup"),
    ("CKV_AWS_158", "HistoryLogGroup"),
    ("CKV_AWS_27", "CollectorFailureQueue"),  # SSE-SQS, which checkov 3.1 does not recognise
    ("CKV_AWS_27", "CollectorScheduleDLQ"),
    ("CKV_AWS_27", "DifferFailureQueue"),
    ("CKV_AWS_27", "DifferRuleDLQ"),
    ("CKV_AWS_18", "SnapshotBucket"),  # access logs optional (AccessLogBucketName)
    ("CKV_AWS_19", "SnapshotBucket"),  # encrypted either way; checkov cannot evaluate the Fn::If
    ("CKV_AWS_149", "KandjiSecret"),  # aws/secretsmanager; bring your own CMK via ExistingSecret*
    ("CKV_AWS_18", "AthenaResultsBucket"),  # disposable query results
    ("CKV_AWS_21", "AthenaResultsBucket"),
}
MIN_REASON_LENGTH = 120  # a sentence saying why, not "not needed"


def test_checkov_runs_once_per_session(checkov_reports: dict[str, dict[str, Any]], request, tmp_path_factory) -> None:
    """test_template_alarms.py reads the same reports: the scan (one checkov run over every variant) is not
    repeated for it, nor on another xdist worker."""
    from session_once import times_produced

    [definition] = request._fixturemanager.getfixturedefs("checkov_reports", request.node)
    assert definition.scope == "session"
    assert times_produced(tmp_path_factory, "checkov") == 1


def _resource_name(check: dict[str, Any]) -> str:
    return check["resource"].split(".", 1)[1]


def failed_summary(report: dict[str, Any]) -> list[str]:
    return [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]


def metadata_skips(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(check id, logical id) -> comment, from every resource's Metadata."""
    skips = {}
    for logical_id, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            skips[(skip["id"], logical_id)] = skip.get("comment", "")
    return skips


# ---------------------------------------------------------------------------
# checkov
# ---------------------------------------------------------------------------
def test_checkov_is_the_pinned_version() -> None:
    assert metadata.version("checkov") == pinned_checkov_version()


@pytest.mark.parametrize("form", ["sam", "transformed"])
def test_checkov_reports_no_failed_check(checkov_reports: dict[str, dict[str, Any]], form: str) -> None:
    report = checkov_reports[form]
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, "checkov could not parse the template: nothing was really checked"
    assert failed_summary(report) == []
    assert summary["failed"] == 0
    assert summary["passed"] >= 25, f"suspiciously few checks passed: {summary}"


def test_checkov_checked_the_resources_sam_generates(checkov_reports: dict[str, dict[str, Any]]) -> None:
    report = checkov_reports["transformed"]
    seen = {c["resource"] for kind in ("passed_checks", "skipped_checks") for c in report["results"][kind]}
    for resource in (
        "AWS::Lambda::Function.CollectorFunction",
        "AWS::Lambda::Function.DifferFunction",
        "AWS::IAM::Role.CollectorFunctionRole",
        "AWS::IAM::Role.DifferFunctionRole",
        "AWS::IAM::Role.CollectorFunctionScheduleRole",
        "AWS::Lambda::Function.DigestFunction",  # optional resources are checked too (OPTIONAL_FEATURES)
        "AWS::IAM::Role.DigestFunctionRole",
        "AWS::SNS::Topic.ChatTopic",
    ):
        assert resource in seen, f"checkov did not check {resource} of the transformed template"


@pytest.mark.parametrize("form", ["sam", "transformed"])
def test_checkov_skips_are_exactly_the_reviewed_ones(checkov_reports: dict[str, dict[str, Any]], form: str) -> None:
    skipped = checkov_reports[form]["results"]["skipped_checks"]
    assert {(c["check_id"], _resource_name(c)) for c in skipped} == EXPECTED_SKIPS
    for check in skipped:
        assert check["check_result"]["suppress_comment"] != "No comment provided", check["resource"]


def test_every_skip_has_a_specific_reason_next_to_its_resource() -> None:
    skips = metadata_skips(load_template(TEMPLATE_PATH))
    assert set(skips) == EXPECTED_SKIPS, "a checkov skip in template.yaml is not in EXPECTED_SKIPS, or one is stale"
    for (check_id, logical_id), comment in skips.items():
        assert re.fullmatch(r"CKV2?_AWS_\d+", check_id), check_id
        assert len(" ".join(comment.split())) >= MIN_REASON_LENGTH, f"{check_id} on {logical_id}: say why"
    # Each function's reasons talk about that function's own situation, not a copy of the other's.
    assert skips[("CKV_AWS_117", "CollectorFunction")] != skips[("CKV_AWS_117", "DifferFunction")]
    assert "Kandji" in skips[("CKV_AWS_117", "CollectorFunction")]
    assert "CollectorFailureQueue" in skips[("CKV_AWS_116", "CollectorFunction")]
    assert "DifferFailureQueue" in skips[("CKV_AWS_116", "DifferFunction")]


@pytest.mark.parametrize("variant", sorted(RESOLVED_BUCKETS))
def test_the_bucket_skips_are_only_about_the_condition(checkov_reports: dict[str, dict[str, Any]],
                                                       variant: str) -> None:
    """Resolved for concrete parameters, the snapshot bucket passes CKV_AWS_19 (and CKV_AWS_18 with logs) unskipped
    (checkov_scan.RESOLVED_BUCKETS: scanned with the others, in the session's one checkov run)."""
    overrides, unskipped = RESOLVED_BUCKETS[variant]
    assert unskipped == ({"CKV_AWS_19", "CKV_AWS_18"} if "AccessLogBucketName" in overrides else {"CKV_AWS_19"})
    report = checkov_reports[variant]
    assert report["summary"]["parsing_errors"] == 0
    assert failed_summary(report) == []
    passed = {(c["check_id"], _resource_name(c)) for c in report["results"]["passed_checks"]}
    assert {(check_id, "SnapshotBucket") for check_id in unskipped} <= passed
    skipped = {(c["check_id"], _resource_name(c)) for c in report["results"]["skipped_checks"]}
    assert not {(check_id, "SnapshotBucket") for check_id in unskipped} & skipped


# ---------------------------------------------------------------------------
# Snapshot bucket: encryption (SSE-S3, or SSE-KMS with a customer managed key), access logs
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return transform_template(load_template(TEMPLATE_PATH))


def _bucket(cfn: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    return resolved_resources(cfn, overrides)["SnapshotBucket"]["Properties"]


def test_snapshot_bucket_defaults_to_sse_s3_without_key_grants(cfn: dict[str, Any]) -> None:
    (rule,) = _bucket(cfn, {})["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    assert snapshot_key_grants(cfn, {}) == {}


def test_snapshot_bucket_with_a_customer_managed_key(cfn: dict[str, Any]) -> None:
    overrides = {"SnapshotBucketKmsKeyArn": KMS_KEY}
    (rule,) = _bucket(cfn, overrides)["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule == {
        "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KMS_KEY},
        "BucketKeyEnabled": True,
    }
    grants = snapshot_key_grants(cfn, overrides)
    assert set(grants) == {"CollectorFunctionRole", "DifferFunctionRole", "HistoryFunctionRole"}, \
        "only the functions that read or write the bucket use the key"
    for role, statements in grants.items():
        (statement,) = statements
        assert statement["Effect"] == "Allow"
        # The collector writes (GenerateDataKey) and reads back; the differ reads snapshots and writes changes/;
        # the history copy reads snapshots/ and writes history/.
        assert sorted(as_list(statement["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"], role
        assert statement["Resource"] == KMS_KEY
        assert statement["Condition"] == {
            "StringEquals": {"kms:ViaService": {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}},
            "StringLike": {"kms:EncryptionContext:aws:s3:arn": [
                {"Fn::GetAtt": ["SnapshotBucket", "Arn"]}, {"Fn::Sub": "${SnapshotBucket.Arn}/*"}]},
        }, f"{role} may use the key only through S3, for this bucket"


def test_snapshot_bucket_key_parameter(cfn: dict[str, Any]) -> None:
    parameter = load_template(TEMPLATE_PATH)["Parameters"]["SnapshotBucketKmsKeyArn"]
    assert parameter["Default"] == ""
    pattern = parameter["AllowedPattern"]
    assert re.fullmatch(pattern, KMS_KEY) and re.fullmatch(pattern, "")
    assert not re.fullmatch(pattern, "alias/aws/s3"), "the key policy is what grants access: a key ARN, not an alias"


def test_snapshot_bucket_access_logs_are_optional(cfn: dict[str, Any]) -> None:
    assert "LoggingConfiguration" not in _bucket(cfn, {})
    assert _bucket(cfn, {"AccessLogBucketName": LOG_BUCKET})["LoggingConfiguration"] == {
        "DestinationBucketName": LOG_BUCKET,
        "LogFilePrefix": {"Fn::Sub": "${AWS::StackName}/snapshot-bucket/"},
    }
    parameter = load_template(TEMPLATE_PATH)["Parameters"]["AccessLogBucketName"]
    assert parameter["Default"] == "" and re.fullmatch(parameter["AllowedPattern"], LOG_BUCKET)
    assert not re.fullmatch(parameter["AllowedPattern"], "s3://bucket")


@pytest.mark.parametrize("bucket_id", ["SnapshotBucket", "AthenaResultsBucket"])
def test_buckets_block_public_access_and_enforce_ownership(cfn: dict[str, Any], bucket_id: str) -> None:
    for overrides in ({}, {"SnapshotBucketKmsKeyArn": KMS_KEY, "AccessLogBucketName": LOG_BUCKET}):
        bucket = resolved_resources(cfn, overrides)[bucket_id]["Properties"]
        assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
        assert len(bucket["PublicAccessBlockConfiguration"]) == 4
        assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        assert "AccessControl" not in bucket


# ---------------------------------------------------------------------------
# IAM: each function's role grants exactly what the code uses
# ---------------------------------------------------------------------------
def _grants(cfn: dict[str, Any], role_id: str, overrides: dict[str, str]) -> set[tuple[str, str]]:
    role = resolved_resources(cfn, overrides)[role_id]
    return {(action, json.dumps(resource, sort_keys=True))
            for s in role_statements(role) if s["Effect"] == "Allow"
            for action in as_list(s["Action"]) for resource in as_list(s["Resource"])}


def _sub(text: str) -> str:
    return json.dumps({"Fn::Sub": text}, sort_keys=True)


def _arn(logical_id: str) -> str:
    return json.dumps({"Fn::GetAtt": [logical_id, "Arn"]}, sort_keys=True)


SNAPSHOTS = "arn:${AWS::Partition}:s3:::${SnapshotBucket}/snapshots/*"
CHANGES = "arn:${AWS::Partition}:s3:::${SnapshotBucket}/changes/*"


def test_collector_role_grants_exactly_what_the_collector_uses(cfn: dict[str, Any]) -> None:
    expected = {
        ("secretsmanager:GetSecretValue", json.dumps({"Ref": "KandjiSecret"})),
        ("s3:PutObject", _sub(SNAPSHOTS)),
        ("s3:GetObject", _sub(SNAPSHOTS)),
        ("s3:ListBucket", _arn("SnapshotBucket")),
        *(("s3:DeleteObject", _sub(f"arn:${{AWS::Partition}}:s3:::${{SnapshotBucket}}/snapshots/{table}/*"))
          for table in ("devices", "device_details", "device_apps", "device_posture", "audit_events", "threats",
                        "vulnerability_detections", "vulnerabilities", "users", "blueprints", "_audit/continued",
                        "fingerprints")),
        ("sqs:SendMessage", _arn("CollectorFailureQueue")),  # SAM: the OnFailure destination
    }
    assert _grants(cfn, "CollectorFunctionRole", {}) == expected
    with_key = _grants(cfn, "CollectorFunctionRole", {"SnapshotBucketKmsKeyArn": KMS_KEY})
    assert with_key - expected == {("kms:GenerateDataKey", json.dumps(KMS_KEY)), ("kms:Decrypt", json.dumps(KMS_KEY))}


def test_differ_role_grants_exactly_what_the_differ_uses(cfn: dict[str, Any]) -> None:
    expected = {
        ("s3:GetObject", _sub(SNAPSHOTS)),
        ("s3:GetObject", _sub(CHANGES)),
        ("s3:PutObject", _sub(CHANGES)),
        # Athena's committed-snapshots row, when the collector died between its manifest and that row.
        ("s3:PutObject", _sub("arn:${AWS::Partition}:s3:::${SnapshotBucket}/snapshots/committed_snapshots/*")),
        *(("s3:DeleteObject", _sub(f"arn:${{AWS::Partition}}:s3:::${{SnapshotBucket}}/changes/{folder}/*"))
          for folder in ("_published", "_transitions")),
        ("s3:ListBucket", _arn("SnapshotBucket")),
        ("sns:Publish", json.dumps({"Ref": "ChangesTopic"})),
        ("kms:GenerateDataKey", _arn("ChangesTopicKey")),
        ("kms:Decrypt", _arn("ChangesTopicKey")),
        ("sqs:SendMessage", _arn("DifferFailureQueue")),  # SAM: the OnFailure destination
    }
    assert _grants(cfn, "DifferFunctionRole", {}) == expected
    with_key = _grants(cfn, "DifferFunctionRole", {"SnapshotBucketKmsKeyArn": KMS_KEY})
    assert with_key - expected == {("kms:GenerateDataKey", json.dumps(KMS_KEY)), ("kms:Decrypt", json.dumps(KMS_KEY))}


def test_the_differ_deletes_only_under_the_prefixes_its_role_may_delete(cfn: dict[str, Any]) -> None:
    """Watched, not assumed: the differ deletes a finished comparison's checkpoint, and releases its claim
    on a previous snapshot that is no longer committed (its manifest deleted: the incomplete one's remedy).
    Every key it deletes is one its role may delete."""
    from differ_fixtures import SECOND, FakeFleet

    from kandji_snapshots.diff.differ import DifferSettings, SnapshotDiffer
    from kandji_snapshots.diff.publisher import MemoryPublisher
    from kandji_snapshots.errors import DeadlineExceeded, KandjiSnapshotsError
    from kandji_snapshots.snapshots.layout import manifest_key
    from kandji_snapshots.snapshots.storage import MemoryObjectStore

    in_bucket = "arn:${AWS::Partition}:s3:::${SnapshotBucket}/"
    may_delete = tuple(json.loads(resource)["Fn::Sub"].removeprefix(in_bucket).removesuffix("*")
                       for action, resource in _grants(cfn, "DifferFunctionRole", {}) if action == "s3:DeleteObject")

    class DeletionsSeen(MemoryObjectStore):
        def __init__(self) -> None:
            super().__init__()
            self.deleted: list[str] = []

        def delete(self, keys) -> None:
            keys = list(keys)
            self.deleted += keys
            super().delete(keys)

    def two_snapshots() -> tuple[DeletionsSeen, Any]:
        store, fleet = DeletionsSeen(), FakeFleet.of(60)
        first = fleet.collect(store, hour=10)
        for item in fleet.devices.values():
            item["agent_version"] = "4.6.0"  # one event per device: the comparison has work to pause
        fleet.collect(store, hour=11)
        return store, first

    paused, _ = two_snapshots()
    checks = iter(range(1_000))
    time_left = lambda: 100.0 if next(checks) < 2 else 0.0  # noqa: E731 (out of time at the third check)
    differ = SnapshotDiffer(paused, MemoryPublisher(), settings=DifferSettings(max_events_per_run=1000))
    with pytest.raises(DeadlineExceeded, match="stopped comparing"):
        differ.run(SECOND, time_left=time_left)
    differ.run(SECOND)  # goes on from the checkpoint, finishes, deletes it
    assert any(key.endswith("/comparison.json") for key in paused.deleted)

    incomplete, first = two_snapshots()
    MemoryObjectStore.delete(incomplete, first.table_keys("device_apps")[:1])  # unseen: the damage, not the differ
    with pytest.raises(KandjiSnapshotsError):
        SnapshotDiffer(incomplete, MemoryPublisher()).run(SECOND)
    MemoryObjectStore.delete(incomplete, [manifest_key(first.snapshot_id)])  # the error's remedy
    SnapshotDiffer(incomplete, MemoryPublisher()).run(SECOND)  # releases its claim on the uncommitted snapshot
    assert any(key.startswith("changes/_transitions/") for key in incomplete.deleted)

    for key in paused.deleted + incomplete.deleted:
        assert key.startswith(may_delete), f"the differ deleted {key}; its role may delete only under {may_delete}"


def test_no_role_may_touch_the_alarm_topic_or_its_key(cfn: dict[str, Any]) -> None:
    """Alarms are published by CloudWatch under the topic and key policies, never by a function role."""
    for role_id in ("CollectorFunctionRole", "DifferFunctionRole", "CollectorFunctionScheduleRole"):
        text = json.dumps(sorted(_grants(cfn, role_id, {})))
        assert "AlarmTopic" not in text, role_id
