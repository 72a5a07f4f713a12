"""The daily digest: the handler against moto's S3 and SNS, after the differ wrote a day's changes files."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import boto3
import pytest
from aws_helpers import drain_queue, read_object, subscribe_queue
from conftest import load_handler
from differ_fixtures import FakeFleet
from sns_messages import check_subject, delivered

from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.diff.digest import (
    BadDigestDay,
    BadDigestRequest,
    DigestMarker,
    DigestRequest,
    build_digest,
    digest_day,
    publish_daily_digest,
)
from kandji_snapshots.diff.digest_runtime import run_digest
from kandji_snapshots.diff.publisher import MemoryPublisher, PublishError
from kandji_snapshots.snapshots.layout import digest_marker_key
from kandji_snapshots.snapshots.storage import MemoryObjectStore, S3ObjectStore

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
        urls[name] = subscribe_queue(topic_arn, name, raw=raw, filter_policy=policy)
    for name, value in {"SNAPSHOT_BUCKET": BUCKET, "DIGEST_TOPIC_ARN": topic_arn,
                        "ATHENA_WORKGROUP": "kandji-fleet", "ATHENA_DATABASE": "kandji_snapshots"}.items():
        monkeypatch.setenv(name, value)
    return lambda name: drain_queue(urls[name], sqs)


def test_the_digest_handler_publishes_one_message_for_the_day(digest_topic, lambda_context):
    a_day_of_changes(S3ObjectStore(boto3.client("s3"), BUCKET))
    result = load_handler("digest").lambda_handler({"day": DAY}, lambda_context)
    assert result == {"day": DAY, "published": True, "forced": False, "events": 3, "snapshots": 2, "high": 2}

    [message] = digest_topic("digests")
    digest = json.loads(message["Body"])
    assert {name: value["StringValue"] for name, value in message["MessageAttributes"].items()} == {
        "change_type": "daily_digest", "severity": "high", "platform": "all"}
    assert digest["change_type"] == "daily_digest" and digest["day"] == DAY and digest["event_count"] == 3
    assert digest["counts"]["device_changed"] == 1 and digest["counts"]["app_updated"] == 1
    assert digest["counts"]["device_removed"] == 1
    assert digest["severity_counts"] == {"info": 1, "high": 2} and digest["platform_counts"] == {"Mac": 3}
    assert [item["summary"] for item in digest["high_severity_events"]] == [
        "FileVault turned off on Mac id-001 (C02ID-001, Ann)", "Device removed on Mac id-003 (C02ID-003, Ann)"]
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
                 "  20261123T110000Z  FileVault turned off on Mac id-001 (C02ID-001, Ann)",
                 "In Athena (workgroup kandji-fleet, database kandji_snapshots): the saved query "
                 "\"Kandji: high-severity changes of the last 7 days\" lists the high-severity ones; "
                 "every change of the day:",
                 f"WHERE dt = '{DAY}'"):
        assert line in email.splitlines(), line
    assert json.loads(delivered(wire, True, "sqs"))["change_type"] == "daily_digest"


def test_a_day_without_snapshots_still_says_so(digest_topic, lambda_context):
    result = load_handler("digest").lambda_handler({"day": "2026-11-20"}, lambda_context)
    assert result == {"day": "2026-11-20", "published": True, "forced": False, "events": 0, "snapshots": 0,
                      "high": 0}
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


# --- sent once a day ------------------------------------------------------------------------
# Through the handler, a day long over whatever the machine's clock says (no wall-clock dependence).
OLD_DAY = "2021-03-04"


def test_a_retry_or_a_second_invocation_for_the_same_day_publishes_nothing(digest_topic, lambda_context):
    handler = load_handler("digest").lambda_handler
    first = handler({"day": OLD_DAY}, lambda_context)
    assert first["published"] is True
    again = handler({"day": OLD_DAY}, lambda_context)  # what a scheduler or Lambda retry does
    assert again["published"] is False and again["marker"]["state"] == "sent"
    assert len(digest_topic("digests")) == 1
    marker = json.loads(read_object(digest_marker_key(OLD_DAY), BUCKET))
    assert marker["state"] == "sent" and marker["day"] == OLD_DAY and marker["forced"] is False


def test_force_sends_the_day_again(digest_topic, lambda_context):
    handler = load_handler("digest").lambda_handler
    handler({"day": OLD_DAY}, lambda_context)
    forced = handler({"day": OLD_DAY, "force": True}, lambda_context)
    assert forced["published"] is True and forced["forced"] is True
    digests = [json.loads(message["Body"]) for message in digest_topic("digests")]
    assert [digest["day"] for digest in digests] == [OLD_DAY, OLD_DAY]
    assert digests[0]["event_id"] == digests[1]["event_id"]  # the same digest: subscribers may drop it by id
    assert handler({"day": OLD_DAY}, lambda_context)["published"] is False  # still sent once without force
    with pytest.raises(BadDigestRequest, match="JSON boolean"):
        handler({"day": OLD_DAY, "force": "yes"}, lambda_context)


def test_a_failed_publish_lets_the_retry_send(digest_topic, lambda_context, monkeypatch):
    import os

    handler = load_handler("digest").lambda_handler
    topic_arn = os.environ["DIGEST_TOPIC_ARN"]
    monkeypatch.setenv("DIGEST_TOPIC_ARN", topic_arn.replace("kandji-digest", "deleted-topic"))
    with pytest.raises(PublishError):
        handler({"day": OLD_DAY}, lambda_context)
    marker = json.loads(read_object(digest_marker_key(OLD_DAY), BUCKET))
    assert marker["state"] == "failed"
    monkeypatch.setenv("DIGEST_TOPIC_ARN", topic_arn)  # fixed: Lambda's retry sends the digest
    assert handler({"day": OLD_DAY}, lambda_context)["published"] is True
    assert len(digest_topic("digests")) == 1


def test_without_a_day_the_digest_is_of_yesterday_on_the_injected_clock():
    store, publisher = MemoryObjectStore(), MemoryPublisher()
    a_day_of_changes(store)
    clock = SimpleNamespace(now=lambda: datetime(2026, 11, 24, 0, 30, tzinfo=timezone.utc))
    result = run_digest({}, lease_seconds=60, env={}, store=store, publisher=publisher, clock=clock)
    assert result["published"] is True
    [message] = publisher.messages
    assert json.loads(message.body)["day"] == DAY and json.loads(message.body)["event_count"] == 3


# --- the marker, on an injected clock ------------------------------------------------------------

NOW = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)


def send(store, publisher, now=NOW, lease_seconds=120.0, **request):
    return publish_daily_digest(store, publisher, DigestRequest(**{"day": DAY, **request}), now=now,
                                lease_seconds=lease_seconds)


def test_an_invocation_that_died_while_sending_is_taken_over_once_its_time_is_up():
    store, publisher = MemoryObjectStore(), MemoryPublisher()
    marker = DigestMarker(store, DAY)
    assert marker.claim(NOW, 120) is None  # an invocation claimed the day, then its Lambda was killed
    # While it may still be running, another one leaves the day to it.
    assert send(store, publisher, now=NOW + timedelta(seconds=60))["published"] is False
    assert publisher.batches == []
    # Past the time it had, it is gone: the day is taken over and sent.
    assert send(store, publisher, now=NOW + timedelta(seconds=121))["published"] is True
    assert len(publisher.batches) == 1 and marker.read()["state"] == "sent"


def test_a_day_not_over_is_sent_but_not_marked():
    store, publisher = MemoryObjectStore(), MemoryPublisher()
    today = NOW.strftime("%Y-%m-%d")
    assert send(store, publisher, day=today)["published"] is True
    assert send(store, publisher, day=today)["published"] is True  # the partial day again: not the day's digest
    assert DigestMarker(store, today).read() is None
    assert send(store, publisher, now=NOW + timedelta(days=1), day=today)["published"] is True  # the scheduled one
    assert send(store, publisher, now=NOW + timedelta(days=1), day=today)["published"] is False
    assert len(publisher.batches) == 3


def test_the_request_is_read_from_the_event():
    assert DigestRequest.from_event({}, NOW) == DigestRequest(DAY, False)
    assert DigestRequest.from_event(None, NOW) == DigestRequest(DAY, False)
    assert DigestRequest.from_event({"day": "2026-11-01", "force": True}, NOW) == DigestRequest("2026-11-01", True)
    for bad in ({"force": 1}, {"force": "true"}, {"day": 20261101}, ["2026-11-01"]):
        with pytest.raises(BadDigestRequest):
            DigestRequest.from_event(bad, NOW)


# --- issue 19.8: a digest that fits, sent once ------------------------------------------------------------

def test_high_events_of_devices_with_10000_character_names_still_fit_one_digest(digest_topic, lambda_context):
    """A user may name their Mac anything: 120 Macs with 10,000-character names turn FileVault off."""
    store = S3ObjectStore(boto3.client("s3"), BUCKET)
    fleet = FakeFleet.of(120)
    for number, item in enumerate(fleet.devices.values()):
        item["device_name"] = f"{number:03d}" + "\n*Severity: info*" + "N" * 10_000
    fleet.collect(store, hour=10)
    for details in fleet.details.values():
        details["filevault"]["filevault_enabled"] = False
    fleet.collect(store, hour=11)
    SnapshotDiffer(store, MemoryPublisher()).run("20261123T110000Z")

    result = load_handler("digest").lambda_handler({"day": DAY}, lambda_context)
    assert result["published"] is True and result["high"] == 120
    [digest] = [json.loads(message["Body"]) for message in digest_topic("digests")]
    assert digest["severity_counts"]["high"] == 120 and 0 < digest["high_severity_listed"] <= 100
    for item in digest["high_severity_events"]:
        assert len(item["device_name"]) <= 120 and "\n" not in item["device_name"]
    marker = json.loads(read_object(digest_marker_key(DAY), BUCKET))
    assert marker["state"] == "sent"


def test_two_invocations_taking_over_a_failed_day_send_one_digest(digest_topic, lambda_context, monkeypatch):
    """Both read the `failed` marker; the second takes the day over while the first is between its read
    and its write. Only one of them may send."""
    handler = load_handler("digest").lambda_handler
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key=digest_marker_key(OLD_DAY),
                  Body=json.dumps({"day": OLD_DAY, "state": "failed", "at": "2021-03-05T07:00:00.000000Z"}))
    reads = {"marker": 0}
    results = []

    def second_invocation_meanwhile():
        reads["marker"] += 1
        if reads["marker"] == 1:  # the first invocation just read the failed marker
            results.append(handler({"day": OLD_DAY}, lambda_context))

    for name in ("open", "get_versioned"):  # how the marker is read, before and after conditional takeovers
        original = getattr(S3ObjectStore, name, None)
        if original is None:
            continue

        def reading(self, key, _original=original):
            answer = _original(self, key)
            if key == digest_marker_key(OLD_DAY):
                second_invocation_meanwhile()
            return answer
        monkeypatch.setattr(S3ObjectStore, name, reading)
    results.append(handler({"day": OLD_DAY}, lambda_context))
    assert sorted(result["published"] for result in results) == [False, True]
    assert len(digest_topic("digests")) == 1
    assert json.loads(read_object(digest_marker_key(OLD_DAY), BUCKET))["state"] == "sent"
