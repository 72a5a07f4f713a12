"""The deployed pipeline on this machine, for end-to-end tests: both handlers wired to a simulator of a
fleet (HTTP on 127.0.0.1) and to moto (bucket, secret, topic, a queue subscribed to it).

Two shapes: `pipeline` runs the collector on a fake clock (known snapshot ids, back-off without waiting);
`deployment` + `start` + `collect_and_diff` run it as deployed, on the system clock, with two subscribers."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import boto3
import pytest
from aws_helpers import (
    BUCKET,
    all_keys,
    create_bucket,
    create_secret,
    drain_queue,
    manifests,
    read_rows,
    subscribe_queue,
)
from conftest import FakeLambdaContext, load_handler
from kandji_fakes import RunClock, run_handler_on

from kandji_snapshots.snapshots.catalog import load_manifest
from kandji_snapshots.snapshots.layout import manifest_key
from kandji_snapshots.snapshots.storage import S3ObjectStore
from simulator import Fleet, KandjiSimulator

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "kst-handler-pipeline-4c1d9e7a2b"  # the simulator's token, in the deployment's secret
SCHEDULER_EVENT = json.loads((ROOT / "events" / "scheduler_event.json").read_text())
MANIFEST_EVENT = json.loads((ROOT / "events" / "manifest_created_event.json").read_text())


def manifest_event(key: str, bucket: str = BUCKET) -> dict:
    """The EventBridge event of a manifest written to `bucket` under `key`: what triggers the differ."""
    event = copy.deepcopy(MANIFEST_EVENT)
    event["detail"]["bucket"]["name"] = bucket
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    event["detail"]["object"]["key"] = key
    return event


class Pipeline:
    def __init__(self, sim: KandjiSimulator, fleet: Fleet, clock: RunClock, topic_arn: str, queue_url: str):
        self.sim = sim
        self.fleet = fleet
        self.clock = clock
        self.topic_arn = topic_arn
        self.queue_url = queue_url
        self.messages: list[dict] = []  # every SQS message received so far, parsed

    def collect(self, context: FakeLambdaContext | None = None) -> dict:
        """The collector handler, its run on a fake clock an hour after the last run's: the snapshot id is known
        however slow the machine, and back-off waits (up to a deadline) take no real time."""
        return run_handler_on(self.clock.next_run(), SCHEDULER_EVENT, context or FakeLambdaContext())

    def diff(self, snapshot_id: str, context: FakeLambdaContext | None = None) -> dict:
        return load_handler("differ").lambda_handler(manifest_event(manifest_key(snapshot_id)),
                                                     context or FakeLambdaContext())

    def received(self) -> list[dict]:
        """Drain the queue subscribed to the topic (raw delivery); returns the new messages' bodies."""
        new = [json.loads(message["Body"]) for message in drain_queue(self.queue_url)]
        self.messages.extend(new)
        return new

    def published_once(self) -> list[dict]:
        """Every message received so far; fails if any event_id arrived twice."""
        self.received()
        counts = Counter(message["event_id"] for message in self.messages)
        assert [event_id for event_id, count in counts.items() if count > 1] == []
        return self.messages


@pytest.fixture
def pipeline(aws, monkeypatch):
    """Starts a simulator for a fleet and wires both handlers to it and to moto (bucket, secret, topic, queue)."""
    started = []

    def start(fleet: Fleet, **simulator_options) -> Pipeline:
        sim = KandjiSimulator(fleet, token=TOKEN, **simulator_options).start()
        started.append(sim)
        create_bucket()
        arn = create_secret(json.dumps({"api_url": sim.api_url, "api_token": TOKEN}))
        topic_arn = boto3.client("sns").create_topic(Name="kandji-changes")["TopicArn"]
        queue_url = subscribe_queue(topic_arn, "changes")
        for name, value in {"KANDJI_SECRET_ID": arn, "SNAPSHOT_BUCKET": BUCKET, "CHANGES_TOPIC_ARN": topic_arn,
                            "KANDJI_ALLOW_INSECURE_LOCALHOST": "true", "KANDJI_MAX_REQUESTS_PER_SECOND": "1000",
                            "MAX_EVENTS_PER_RUN": "500"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("DIFF_IGNORE_FIELDS", raising=False)
        return Pipeline(sim, fleet, RunClock(), topic_arn, queue_url)

    yield start
    for sim in started:
        sim.stop()


def snapshot_keys() -> list[str]:
    return sorted(all_keys(prefix="snapshots/"))


def committed_ids() -> list[str]:
    return sorted(manifest["snapshot_id"] for manifest in manifests())


def assert_complete(manifest: dict, fleet: Fleet) -> None:
    """The snapshot holds every device of the fleet once, with every app the simulator serves."""
    ids = sorted(fleet.device_ids())
    assert [row["device_id"] for row in read_rows(manifest["tables"]["devices"]["keys"])] == ids
    assert [row["device_id"] for row in read_rows(manifest["tables"]["device_details"]["keys"])] == ids
    assert manifest["tables"]["device_apps"]["rows"] == sum(fleet.app_count(device_id) for device_id in ids)
    assert manifest["skipped_devices"] == []


def the_manifest(result: dict) -> dict:
    return load_manifest(S3ObjectStore(boto3.client("s3"), BUCKET), result["snapshot_id"]).document


# --- as deployed: two subscribers (one filtered to high severity), the system clock --------------

@pytest.fixture
def deployment(aws, monkeypatch):
    """The stack's resources in moto, two SQS subscribers (one filtered to high severity)."""
    create_bucket()
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="kandji-snapshots-changes")["TopicArn"]
    queues = {}
    for name, policy in (("all", None), ("high", {"severity": ["high"]})):
        queues[name] = subscribe_queue(topic, f"changes-{name}", filter_policy=policy)
    for name, value in {"SNAPSHOT_BUCKET": BUCKET, "CHANGES_TOPIC_ARN": topic, "MAX_EVENTS_PER_RUN": "500",
                        "KANDJI_ALLOW_INSECURE_LOCALHOST": "true", "KANDJI_MAX_REQUESTS_PER_SECOND": "1000"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DIFF_IGNORE_FIELDS", raising=False)

    def received(name: str) -> list[dict]:
        return [json.loads(message["Body"]) for message in drain_queue(queues[name], sqs)]

    return received


def collect_and_diff(lambda_context) -> dict:
    """One scheduled run, then the differ as the EventBridge rule would trigger it."""
    result = load_handler("collector").lambda_handler(SCHEDULER_EVENT, lambda_context)
    event = copy.deepcopy(MANIFEST_EVENT)
    event["detail"]["bucket"]["name"] = BUCKET
    [key] = [f"snapshots/manifests/dt={m['dt']}/{m['snapshot_id']}/manifest.json" for m in manifests()
             if m["snapshot_id"] == result["snapshot_id"]]
    event["detail"]["object"]["key"] = key
    load_handler("differ").lambda_handler(event, lambda_context)
    return event


def start(fleet: Fleet, monkeypatch, **simulator_options) -> KandjiSimulator:
    """A simulator of `fleet`, running, whose URL and token are the deployment's Kandji secret."""
    sim = KandjiSimulator(fleet, token=TOKEN, **simulator_options).start()
    monkeypatch.setenv("KANDJI_SECRET_ID", create_secret(json.dumps({"api_url": sim.api_url, "api_token": TOKEN})))
    return sim
