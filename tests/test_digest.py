"""The daily digest: the handler against moto's S3 and SNS, after the differ wrote a day's changes files."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import boto3
import pytest

from aws_helpers import drain_queue
from conftest import load_handler
from differ_fixtures import FakeFleet
from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.diff.digest import BadDigestDay, build_digest, digest_day
from kandji_snapshots.diff.publisher import MemoryPublisher
from kandji_snapshots.snapshots.storage import MemoryObjectStore, S3ObjectStore
from test_alerts import check_subject, delivered

BUCKET = "kandji-snapshots-digest-test"
DAY = "2026-11-23"


def a_day_of_changes(store) -> None:
    """Three snapshots on 2026-11-23, two diffed (changes files): FileVault off, an app update, a removed device."""
    fleet = FakeFleet.of(4)
    fleet.collect(store, hour=10)
    fleet.details["id-001"]["filevault"]["filevault_enabled"] = False
    fleet.collect(store, hour=11)
    fleet.apps["id-002"][0]["version"] = "121.0"
    fleet.remove("id-003")
    fleet.collect(store, hour=12)
    differ = SnapshotDiffer(store, MemoryPublisher())
    differ.run("20261123T110000Z")
    differ.run("20261123T120000Z")
    fleet.collect(store, hour=9, day=24)  # the next day's snapshot is not counted


@pytest.fixture
def digest_topic(aws, monkeypatch):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic_arn = sns.create_topic(Name="kandji-digest")["TopicArn"]
    urls = {}
    for name, raw, policy in (("digests", True, {"change_type": ["daily_digest"]}), ("envelope", False, None),
                              ("changes-only", True, {"change_type": [{"anything-but": ["daily_digest"]}]})):
        urls[name] = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=urls[name], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes = {"RawMessageDelivery": "true"} if raw else {}
        if policy:
            attributes["FilterPolicy"] = json.dumps(policy)
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    for name, value in {"SNAPSHOT_BUCKET": BUCKET, "DIGEST_TOPIC_ARN": topic_arn,
                        "ATHENA_WORKGROUP": "kandji-fleet", "ATHENA_DATABASE": "kandji_snapshots"}.items():
        monkeypatch.setenv(name, value)
    return lambda name: drain_queue(urls[name], sqs)


def test_the_digest_handler_publishes_one_message_for_the_day(digest_topic, lambda_context):
    a_day_of_changes(S3ObjectStore(boto3.client("s3"), BUCKET))
    result = load_handler("digest").lambda_handler({"day": DAY}, lambda_context)
    assert result == {"day": DAY, "events": 3, "snapshots": 2, "high": 2}

    [message] = digest_topic("digests")
    digest = json.loads(message["Body"])
    assert {name: value["StringValue"] for name, value in message["MessageAttributes"].items()} == {
        "change_type": "daily_digest", "severity": "high", "platform": "all"}
    assert digest["change_type"] == "daily_digest" and digest["day"] == DAY and digest["event_count"] == 3
    assert digest["counts"]["device_changed"] == 1 and digest["counts"]["app_updated"] == 1
    assert digest["counts"]["device_removed"] == 1
    assert digest["severity_counts"] == {"info": 1, "high": 2} and digest["platform_counts"] == {"Mac": 3}
    assert [item["summary"] for item in digest["high_severity_events"]] == [
        "FileVault turned off on Mac id-001 (C02ID-001)", "Device removed on Mac id-003 (C02ID-003)"]
    assert digest["first_snapshot_id"] == "20261123T110000Z" and digest["last_snapshot_id"] == "20261123T120000Z"
    assert digest["changes_prefix"] == f"s3://{BUCKET}/changes/dt={DAY}/"
    assert digest_topic("changes-only") == []  # a filter policy can leave the digest out

    [envelope] = [json.loads(m["Body"]) for m in digest_topic("envelope")]
    check_subject(envelope["Subject"])
    assert envelope["Subject"] == f"[high] Kandji daily digest {DAY}: 3 changes, 2 high"


def test_the_digest_e_mail_reads_as_text(digest_topic, lambda_context):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns.models import sns_backends

    a_day_of_changes(S3ObjectStore(boto3.client("s3"), BUCKET))
    load_handler("digest").lambda_handler({"day": DAY}, lambda_context)
    [topic] = sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].topics.values()
    [(_, wire, _, *_)] = topic.sent_notifications
    email = delivered(wire, True, "email")
    assert email.startswith(f"Kandji fleet changes on {DAY} (UTC)\n")
    for line in ("3 changes in 2 diffed snapshots (20261123T110000Z to 20261123T120000Z); 2 of high severity.",
                 "  device_removed: 1", "  high: 2", "  Mac: 3",
                 "  20261123T110000Z  FileVault turned off on Mac id-001 (C02ID-001)",
                 "In Athena (workgroup kandji-fleet, database kandji_snapshots): the saved query "
                 "\"Kandji: high-severity changes of the last 7 days\" lists the high-severity ones; "
                 "every change of the day:",
                 f"WHERE dt = '{DAY}'"):
        assert line in email.splitlines(), line
    assert json.loads(delivered(wire, True, "sqs"))["change_type"] == "daily_digest"


def test_a_day_without_snapshots_still_says_so(digest_topic, lambda_context):
    result = load_handler("digest").lambda_handler({"day": "2026-11-20"}, lambda_context)
    assert result == {"day": "2026-11-20", "events": 0, "snapshots": 0, "high": 0}
    [message] = digest_topic("digests")
    assert json.loads(message["Body"])["severity"] == "info"


def test_the_day_defaults_to_yesterday_and_is_checked():
    assert digest_day(datetime(2026, 11, 24, 0, 30, tzinfo=timezone.utc)) == DAY
    assert digest_day(datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc), "2026-11-01") == "2026-11-01"
    for bad in ("yesterday", "2026-13-01", "2026-11-23/../x"):
        with pytest.raises(BadDigestDay, match="YYYY-MM-DD"):
            digest_day(datetime(2026, 11, 24, tzinfo=timezone.utc), bad)


def test_progress_markers_are_not_read_as_changes():
    store = MemoryObjectStore()
    a_day_of_changes(store)
    assert any(key.startswith("changes/_published/") for key in store.list_keys("changes/"))
    store.put(f"changes/dt={DAY}/notes.txt", b"not a changes file")
    digest = build_digest(store, DAY)
    assert digest.event_count == 3 and digest.snapshot_ids == ["20261123T110000Z", "20261123T120000Z"]
