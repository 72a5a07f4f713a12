"""The SNS adapter against moto: batching limits, retries, message attributes, filter policies."""

from __future__ import annotations

import json
from types import SimpleNamespace

import boto3
import pytest
from aws_helpers import drain_queue, subscribe_queue
from moto import mock_aws

from kandji_snapshots.diff.publisher import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    Message,
    PublishError,
    SnsPublisher,
    event_message,
    plan_batches,
)

REGION = "us-east-1"
CHANGES_URI = "s3://bucket/changes/dt=2026-11-23/20261123T110000Z.json.gz"


def event(index: int, *, severity: str = "info", padding: int = 0, platform: str | None = "Mac") -> dict:
    return {"schema_version": 1, "event_id": f"{index:032x}", "change_type": "device_changed",
            "severity": severity, "snapshot_id": "20261123T110000Z", "previous_snapshot_id": "20261123T100000Z",
            "device_id": f"id-{index:03d}", "device_name": f"Mac {index}", "serial_number": f"C02{index}",
            "platform": platform,
            "changes": [{"field": "notes", "before": None, "after": "x" * padding, "severity": severity}]}


class RecordingSns:
    """The real (moto) client, with every PublishBatch request kept for inspection."""

    def __init__(self, client):
        self._client = client
        self.requests: list[list[dict]] = []

    def publish_batch(self, **request):
        self.requests.append(request["PublishBatchRequestEntries"])
        return self._client.publish_batch(**request)


def request_bytes(entries: list[dict]) -> int:
    return sum(len(entry["Message"].encode()) + len(entry.get("Subject", "").encode()) + sum(
        len(name) + len(value["DataType"]) + len(value["StringValue"].encode())
        for name, value in entry["MessageAttributes"].items()) for entry in entries)


@pytest.fixture
def sns_topic():
    with mock_aws():
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        topic_arn = sns.create_topic(Name="kandji-changes")["TopicArn"]

        def subscribed_queue(name: str, filter_policy: dict | None = None) -> str:
            return subscribe_queue(topic_arn, name, filter_policy=filter_policy)

        def drain(url: str) -> list[dict]:
            return drain_queue(url, sqs)

        yield SimpleNamespace(sns=sns, topic_arn=topic_arn, subscribed_queue=subscribed_queue, drain=drain)


def publish_all(publisher, events: list[dict]) -> None:
    for batch in plan_batches(event_message(item, CHANGES_URI) for item in events):
        publisher.publish_batch(batch)


def test_batches_stay_within_ten_entries_and_256_kib(sns_topic):
    everything = sns_topic.subscribed_queue("everything")
    sns = RecordingSns(sns_topic.sns)
    events = [event(index) for index in range(23)]
    # Close to the limit on their own, leaving room for the subject and the e-mail text (about 2 KB).
    events[5] = event(5, padding=MAX_BATCH_BYTES - 4000)
    events[6] = event(6, padding=MAX_BATCH_BYTES - 4000)
    events[15] = event(15, padding=100_000)
    events[16] = event(16, padding=100_000)
    events[17] = event(17, padding=100_000)
    publish_all(SnsPublisher(sns, sns_topic.topic_arn), events)

    assert all(len(entries) <= MAX_BATCH_ENTRIES for entries in sns.requests)
    assert all(request_bytes(entries) <= MAX_BATCH_BYTES for entries in sns.requests)
    sent = [entry["Id"] for entries in sns.requests for entry in entries]
    assert sent == [item["event_id"] for item in events]  # in order, each once
    received = sns_topic.drain(everything)
    assert sorted(json.loads(m["Body"])["event_id"] for m in received) == sorted(sent)
    big = next(json.loads(m["Body"]) for m in received if json.loads(m["Body"])["device_id"] == "id-005")
    assert len(big["changes"][0]["after"]) == MAX_BATCH_BYTES - 4000 and "truncated" not in big


def test_message_attributes_reach_subscribers(sns_topic):
    queue = sns_topic.subscribed_queue("everything")
    publish_all(SnsPublisher(sns_topic.sns, sns_topic.topic_arn), [event(1, severity="high"),
                                                                    event(2, platform=None)])
    received = {json.loads(m["Body"])["device_id"]: m["MessageAttributes"] for m in sns_topic.drain(queue)}
    assert {name: value["StringValue"] for name, value in received["id-001"].items()} == {
        "change_type": "device_changed", "severity": "high", "platform": "Mac"}
    assert received["id-002"]["platform"]["StringValue"] == "unknown"  # SNS rejects empty values


def test_a_severity_filter_policy_receives_only_high_events(sns_topic):
    everything = sns_topic.subscribed_queue("everything")
    security = sns_topic.subscribed_queue("security", {"severity": ["high"]})
    events = [event(index, severity="high" if index % 3 == 0 else "info") for index in range(12)]
    publish_all(SnsPublisher(sns_topic.sns, sns_topic.topic_arn), events)
    assert len(sns_topic.drain(everything)) == 12
    high = [json.loads(m["Body"]) for m in sns_topic.drain(security)]
    assert sorted(item["device_id"] for item in high) == ["id-000", "id-003", "id-006", "id-009"]
    assert {item["severity"] for item in high} == {"high"}


def test_an_event_over_256_kib_is_shrunk_and_still_delivered(sns_topic):
    queue = sns_topic.subscribed_queue("everything")
    huge = event(1, padding=400_000)
    message = event_message(huge, CHANGES_URI)
    assert message.size <= MAX_BATCH_BYTES
    publish_all(SnsPublisher(sns_topic.sns, sns_topic.topic_arn), [huge])
    [received] = [json.loads(m["Body"]) for m in sns_topic.drain(queue)]
    assert received["truncated"] is True and received["changes_uri"] == CHANGES_URI
    assert received["event_id"] == huge["event_id"] and received["change_count"] == 1
    assert received["changes"][0]["after"] is None and received["changes"][0]["after_truncated"] is True


class FlakySns:
    """A tiny stand-in for the SNS client: reports chosen entries as failed, `failures` times each."""

    def __init__(self, failing: dict[str, int], *, sender_fault: bool = False):
        self.failing = dict(failing)
        self.sender_fault = sender_fault
        self.calls: list[list[str]] = []

    def publish_batch(self, TopicArn, PublishBatchRequestEntries):
        ids = [entry["Id"] for entry in PublishBatchRequestEntries]
        self.calls.append(ids)
        failed = []
        for entry_id in ids:
            if self.failing.get(entry_id, 0) > 0:
                self.failing[entry_id] -= 1
                failed.append({"Id": entry_id, "Code": "InternalFailure", "Message": "try again",
                               "SenderFault": self.sender_fault})
        successful = [{"Id": entry_id, "MessageId": f"m-{entry_id}"} for entry_id in ids
                      if entry_id not in {item["Id"] for item in failed}]
        return {"Successful": successful, "Failed": failed}


def messages(count: int) -> list[Message]:
    return [event_message(event(index), CHANGES_URI) for index in range(count)]


def test_failed_entries_are_retried_with_backoff():
    sns, sleeps = FlakySns({messages(3)[1].id: 2}), []
    SnsPublisher(sns, "arn:aws:sns:us-east-1:123456789012:t", sleep=sleeps.append).publish_batch(messages(3))
    batch = [m.id for m in messages(3)]
    assert sns.calls == [batch, [batch[1]], [batch[1]]]
    assert sleeps == [0.2, 0.4]


def test_entries_that_keep_failing_raise_an_error_naming_them():
    batch = messages(4)
    sns = FlakySns({batch[2].id: 99})
    publisher = SnsPublisher(sns, "arn:aws:sns:us-east-1:123456789012:t", max_attempts=3, sleep=lambda _: None)
    with pytest.raises(PublishError, match=f"{batch[2].id}: InternalFailure try again") as failure:
        publisher.publish_batch(batch)
    assert "1 of 4 messages failed after 3 attempt(s)" in str(failure.value)
    assert sorted(failure.value.published_ids) == sorted(m.id for m in batch if m is not batch[2])
    assert len(sns.calls) == 3


def test_sender_faults_are_not_retried():
    batch = messages(2)
    sns = FlakySns({batch[0].id: 1}, sender_fault=True)
    with pytest.raises(PublishError, match="after 1 attempt"):
        SnsPublisher(sns, "arn:aws:sns:us-east-1:123456789012:t", sleep=lambda _: None).publish_batch(batch)
    assert len(sns.calls) == 1


def test_a_client_error_says_which_topic_and_how_far_it_got():
    class Broken:
        def publish_batch(self, **request):
            raise RuntimeError("connection reset")

    with pytest.raises(PublishError, match=r"PublishBatch to arn:aws:sns:us-east-1:1:t failed.*0 of 2"):
        SnsPublisher(Broken(), "arn:aws:sns:us-east-1:1:t").publish_batch(messages(2))


def test_plan_batches_respects_both_limits():
    small = messages(25)
    assert [len(batch) for batch in plan_batches(small)] == [10, 10, 5]
    big = [event_message(event(index, padding=100_000), CHANGES_URI) for index in range(5)]
    assert [len(batch) for batch in plan_batches(big)] == [2, 2, 1]
    for batch in plan_batches(big + small):
        assert len(batch) <= MAX_BATCH_ENTRIES and sum(m.size for m in batch) <= MAX_BATCH_BYTES


def test_message_size_counts_body_and_attributes():
    message = Message("a", "héllo", {"severity": "high"})
    assert message.size == len("héllo".encode()) + len("severity") + len("String") + len("high")


def test_an_event_with_too_many_changes_keeps_the_first_half_that_fits():
    from kandji_snapshots.diff.events import encode_event, shrink_event

    big = event(7)
    big["changes"] = [{"field": f"field_{n:02d}", "before": "a" * 40, "after": "b" * 40, "severity": "info"}
                      for n in range(40)]
    # Room for 12 changes: halving 40 -> 20 -> 10 keeps ten, the first ten, and says how many there were.
    room = len(encode_event(dict(big, changes=big["changes"][:12], truncated=True, changes_uri=CHANGES_URI,
                                 change_count=40)))
    small = shrink_event(big, CHANGES_URI, lambda body: len(body) <= room)
    assert small["changes"] == big["changes"][:10]
    assert small["change_count"] == 40 and small["truncated"] is True and small["changes_uri"] == CHANGES_URI
    assert small["device_name"] == big["device_name"]  # the rest of the event is kept
