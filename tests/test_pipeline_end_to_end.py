"""The whole pipeline as deployed, on this machine: the collector and differ handlers, the
Kandji simulator over HTTP, and moto's S3, Secrets Manager, SNS and SQS. A 1,100-device fleet
(four device-list pages, every platform) changes between two collections; subscribers must
receive exactly those changes, once each, with the right severity."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest

from aws_helpers import BUCKET, create_bucket, create_secret, drain_queue, manifests
from conftest import load_handler
from simulator import Fleet, KandjiSimulator

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "kst-end-to-end-token"
SCHEDULER_EVENT = json.loads((ROOT / "events" / "scheduler_event.json").read_text())


@pytest.fixture
def deployment(aws, monkeypatch):
    """The stack's resources in moto, two SQS subscribers (one filtered to high severity)."""
    create_bucket()
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="kandji-snapshots-changes")["TopicArn"]
    queues = {}
    for name, policy in (("all", None), ("high", {"severity": ["high"]})):
        url = sqs.create_queue(QueueName=f"changes-{name}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes = {"RawMessageDelivery": "true", **({"FilterPolicy": json.dumps(policy)} if policy else {})}
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
        queues[name] = url
    for name, value in {"SNAPSHOT_BUCKET": BUCKET, "CHANGES_TOPIC_ARN": topic, "MAX_EVENTS_PER_RUN": "500",
                        "KANDJI_ALLOW_INSECURE_LOCALHOST": "true", "KANDJI_MAX_REQUESTS_PER_SECOND": "1000"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DIFF_IGNORE_FIELDS", raising=False)

    def received(name: str) -> list[dict]:
        return [json.loads(message["Body"]) for message in drain_queue(queues[name], sqs)]

    return received


def collect_and_diff(lambda_context) -> dict:
    """One scheduled run, then the differ as the EventBridge rule would trigger it."""
    time.sleep(1.05 - time.time() % 1)  # snapshot ids have one-second resolution
    result = load_handler("collector").lambda_handler(SCHEDULER_EVENT, lambda_context)
    event = json.loads((ROOT / "events" / "manifest_created_event.json").read_text())
    event["detail"]["bucket"]["name"] = BUCKET
    [key] = [f"snapshots/manifests/dt={m['dt']}/{m['snapshot_id']}/manifest.json" for m in manifests()
             if m["snapshot_id"] == result["snapshot_id"]]
    event["detail"]["object"]["key"] = key
    load_handler("differ").lambda_handler(event, lambda_context)
    return event


def start(fleet: Fleet, monkeypatch) -> KandjiSimulator:
    sim = KandjiSimulator(fleet, token=TOKEN).start()
    monkeypatch.setenv("KANDJI_SECRET_ID", create_secret(json.dumps({"api_url": sim.api_url, "api_token": TOKEN})))
    return sim


def test_subscribers_receive_exactly_the_fleet_changes(deployment, lambda_context, monkeypatch):
    fleet = Fleet.generate(1100, seed=21)
    sim = start(fleet, monkeypatch)
    try:
        collect_and_diff(lambda_context)
        first = deployment("all")
        assert [m["change_type"] for m in first] == ["snapshot_summary"]  # first snapshot: summary only
        assert first[0]["first_snapshot"] is True and first[0]["device_count"] == 1100

        made = fleet.apply_demo_changes()
        trigger = collect_and_diff(lambda_context)
        events = deployment("all")
        high = deployment("high")
        load_handler("differ").lambda_handler(trigger, lambda_context)  # EventBridge delivers it again
        redelivered = deployment("all")
    finally:
        sim.stop()

    changes = [e for e in events if e["change_type"] != "snapshot_summary"]
    found = {(e["change_type"], e["device_id"], e["severity"]) for e in changes}
    assert found == {
        ("device_added", made["enrolled"]["device_id"], "info"),
        ("device_removed", made["removed"]["device_id"], "high"),
        ("device_changed", made["os_updated"]["device_id"], "info"),
        ("app_installed", made["app_installed"]["device_id"], "info"),
        ("app_updated", made["app_updated"]["device_id"], "info"),
        ("device_changed", made["filevault_disabled"]["device_id"], "high"),
    }
    assert len(changes) == len(found) == len({e["event_id"] for e in changes})  # none duplicated
    by_type = {(e["change_type"], e["device_id"]): e for e in changes}
    os_event = by_type[("device_changed", made["os_updated"]["device_id"])]
    assert {"field": "os_version", "before": made["os_updated"]["before"],
            "after": made["os_updated"]["after"]}.items() <= next(
        c for c in os_event["changes"] if c["field"] == "os_version").items()
    fv_event = by_type[("device_changed", made["filevault_disabled"]["device_id"])]
    assert any(c["field"] == "filevault.filevault_enabled" and c["before"] is True and c["after"] is False
               for c in fv_event["changes"])
    updated = by_type[("app_updated", made["app_updated"]["device_id"])]["app"]
    assert (updated["bundle_id"], updated["previous_version"], updated["version"]) == (
        made["app_updated"]["bundle_id"], made["app_updated"]["before"], made["app_updated"]["after"])
    assert by_type[("app_installed", made["app_installed"]["device_id"])]["app"]["bundle_id"] == \
        "com.example.demo-tool"
    added = by_type[("device_added", made["enrolled"]["device_id"])]
    assert len(added["apps"]) == fleet.app_count(made["enrolled"]["device_id"])
    [summary] = [e for e in events if e["change_type"] == "snapshot_summary"]
    assert summary["event_count"] == 6 and summary["suppressed"] is False
    # The filtered subscriber got the two high events and the (high) summary, nothing else.
    assert sorted(e["change_type"] for e in high) == ["device_changed", "device_removed", "snapshot_summary"]
    assert redelivered == []


def test_a_fleet_that_only_checked_in_again_yields_a_summary_with_zero_changes(deployment, lambda_context,
                                                                                monkeypatch):
    fleet = Fleet.generate(300, seed=22)
    sim = start(fleet, monkeypatch)
    try:
        collect_and_diff(lambda_context)
        deployment("all")
        fleet.check_in_all()
        collect_and_diff(lambda_context)
        messages = deployment("all")
    finally:
        sim.stop()
    assert [m["change_type"] for m in messages] == ["snapshot_summary"]
    assert messages[0]["event_count"] == 0 and messages[0]["first_snapshot"] is False
