"""The differ Lambda end to end: moto's S3 and SNS (server mode, reached through AWS_ENDPOINT_URL)."""

from __future__ import annotations

import gzip
import json
import re

import boto3
import pytest
from aws_helpers import BUCKET, drain_queue, subscribe_queue
from conftest import FakeLambdaContext, load_handler
from differ_fixtures import FakeFleet, Run
from handler_pipeline import manifest_event

from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.diff.runtime import DifferEnvironment, UnexpectedTrigger, snapshot_id_from_trigger
from kandji_snapshots.errors import ConfigurationError, DeadlineExceeded, KandjiSnapshotsError
from kandji_snapshots.snapshots.layout import changes_key, manifest_key
from kandji_snapshots.snapshots.storage import S3ObjectStore

FIRST, SECOND = "20261123T100000Z", "20261123T110000Z"


@pytest.fixture
def deployed(aws, monkeypatch):
    """Bucket, topic and a raw-delivery queue in moto, and the differ's environment."""
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    topic_arn = boto3.client("sns").create_topic(Name="kandji-changes")["TopicArn"]
    queue_url = subscribe_queue(topic_arn, "changes")
    environment = {"SNAPSHOT_BUCKET": BUCKET, "CHANGES_TOPIC_ARN": topic_arn, "MAX_EVENTS_PER_RUN": "100",
                   "POWERTOOLS_SERVICE_NAME": "kandji-snapshots", "POWERTOOLS_METRICS_NAMESPACE": "KandjiSnapshots",
                   "POWERTOOLS_TRACE_DISABLED": "1"}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DIFF_IGNORE_FIELDS", raising=False)

    def received() -> list[dict]:
        return drain_queue(queue_url)

    return received


def two_snapshots() -> None:
    store = S3ObjectStore(boto3.client("s3"), BUCKET)
    fleet = FakeFleet.of(3)
    fleet.collect(store, hour=10)
    fleet.check_in()
    fleet.details["id-001"]["filevault"]["filevault_enabled"] = False
    fleet.apps["id-002"][0]["version"] = "121.0"
    fleet.collect(store, hour=11)


def test_handler_publishes_the_changes_between_the_two_latest_snapshots(deployed, lambda_context, capsys):
    two_snapshots()
    handler = load_handler("differ")
    result = handler.lambda_handler(manifest_event(manifest_key(SECOND)), lambda_context)

    assert result["snapshot_id"] == SECOND and result["previous_snapshot_id"] == FIRST
    assert result["events"] == 2 and result["published_messages"] == 3 and not result["already_done"]
    assert result["changes_uri"] == f"s3://{BUCKET}/{changes_key(SECOND)}"
    messages = deployed()
    bodies = [json.loads(message["Body"]) for message in messages]
    assert [(body["change_type"], body["device_id"] if "device_id" in body else None) for body in bodies] == [
        ("device_changed", "id-001"), ("app_updated", "id-002"), ("snapshot_summary", None)]
    attributes = {body["change_type"]: {name: value["StringValue"] for name, value in m["MessageAttributes"].items()}
                  for body, m in zip(bodies, messages)}
    assert attributes["device_changed"] == {"change_type": "device_changed", "severity": "high", "platform": "Mac"}
    assert attributes["snapshot_summary"] == {"change_type": "snapshot_summary", "severity": "high",
                                              "platform": "all"}
    assert "HighSeverityEvents" in capsys.readouterr().out  # EMF metrics were flushed

    # EventBridge delivers at least once: the same trigger again publishes nothing.
    again = handler.lambda_handler(manifest_event(manifest_key(SECOND)), lambda_context)
    assert again["already_done"] and again["published_messages"] == 0
    assert deployed() == []


def test_first_snapshot_publishes_only_its_summary(deployed, lambda_context):
    FakeFleet.of(2).collect(S3ObjectStore(boto3.client("s3"), BUCKET), hour=10)
    result = load_handler("differ").lambda_handler(manifest_event(manifest_key(FIRST)), lambda_context)
    [summary] = [json.loads(message["Body"]) for message in deployed()]
    assert summary["first_snapshot"] is True and summary["device_count"] == 2 and result["events"] == 0


def test_an_event_for_another_bucket_is_refused_with_a_clear_error(deployed, lambda_context):
    with pytest.raises(UnexpectedTrigger, match="bucket 'someone-elses-bucket'.*SNAPSHOT_BUCKET"):
        load_handler("differ").lambda_handler(manifest_event(manifest_key(SECOND), bucket="someone-elses-bucket"),
                                             lambda_context)


def test_an_object_that_is_not_a_manifest_is_refused_with_a_clear_error(deployed, lambda_context):
    with pytest.raises(UnexpectedTrigger, match="is not a snapshot manifest"):
        load_handler("differ").lambda_handler(manifest_event("snapshots/devices/dt=2026-11-23/x.json.gz"),
                                             lambda_context)


def test_url_encoded_manifest_keys_are_understood():
    key = manifest_key(SECOND).replace("=", "%3D")
    assert snapshot_id_from_trigger(BUCKET, key, BUCKET) == SECOND


def test_environment_is_read_and_checked():
    env = DifferEnvironment.from_env({"SNAPSHOT_BUCKET": "b", "CHANGES_TOPIC_ARN": "arn:t",
                                      "DIFF_IGNORE_FIELDS": " users.* , extra,,"})
    assert (env.bucket, env.topic_arn, env.settings.max_events_per_run, env.settings.ignore_fields) == (
        "b", "arn:t", 500, ("users.*", "extra"))
    with pytest.raises(ConfigurationError, match="CHANGES_TOPIC_ARN is not set"):
        DifferEnvironment.from_env({"SNAPSHOT_BUCKET": "b"})
    with pytest.raises(ConfigurationError, match="MAX_EVENTS_PER_RUN='many'"):
        DifferEnvironment.from_env({"SNAPSHOT_BUCKET": "b", "CHANGES_TOPIC_ARN": "t", "MAX_EVENTS_PER_RUN": "many"})


def test_a_field_moving_on_every_device_does_not_bury_a_filevault_turned_off(deployed, lambda_context, monkeypatch):
    """MAX_EVENTS_PER_RUN is 20: 40 devices report a new unknown field moving, one also turned FileVault off."""
    monkeypatch.setenv("MAX_EVENTS_PER_RUN", "20")
    store = S3ObjectStore(boto3.client("s3"), BUCKET)
    fleet = FakeFleet.of(40)
    fleet.collect(store, hour=10)

    def check_in_with_a_moving_counter(hour: int) -> None:
        fleet.check_in()
        for device_id, item in fleet.devices.items():
            item["kandji_heartbeat_seq"] = f"{hour}-{device_id}"  # unknown to the schema: lands in `extra`
        fleet.collect(store, hour=hour)

    check_in_with_a_moving_counter(11)
    fleet.details["id-012"]["filevault"]["filevault_enabled"] = False
    check_in_with_a_moving_counter(12)
    handler = load_handler("differ")
    handler.lambda_handler(manifest_event(manifest_key(SECOND)), lambda_context)
    deployed()
    result = handler.lambda_handler(manifest_event(manifest_key("20261123T120000Z")), lambda_context)

    bodies = [json.loads(message["Body"]) for message in deployed()]
    assert result["events"] == 40 and result["suppressed"]
    [filevault, summary] = sorted(bodies, key=lambda body: body["change_type"])
    assert (filevault["change_type"], filevault["device_id"], filevault["severity"]) == (
        "device_changed", "id-012", "high")
    assert summary["published_events"] == 1 and summary["suppressed"]
    noisy = summary["noisy_field"]
    assert noisy["field"].startswith("extra") and noisy["devices"] == 40
    assert noisy["silence_with"] == f"DIFF_IGNORE_FIELDS={noisy['field']}"

    # The suggested setting silences the noise; the next FileVault change is one event, as usual.
    monkeypatch.setenv("DIFF_IGNORE_FIELDS", noisy["field"])
    fleet.details["id-030"]["filevault"]["filevault_enabled"] = False
    check_in_with_a_moving_counter(13)
    result = handler.lambda_handler(manifest_event(manifest_key("20261123T130000Z")), lambda_context)
    assert result["events"] == 1 and not result["suppressed"]
    assert sorted(json.loads(message["Body"]).get("device_id", "-") for message in deployed()) == ["-", "id-030"]


def overlapping_runs(store: S3ObjectStore) -> tuple[str, str, str]:
    """Snapshot 09:00, then runs A (10:00) and B (10:01) that both started after it: FileVault went off
    before A, an app was updated between A and B."""
    fleet = FakeFleet.of(3)
    base = fleet.collect(store, hour=9).snapshot_id
    fleet.check_in()
    fleet.details["id-001"]["filevault"]["filevault_enabled"] = False
    a = fleet.collect(store, hour=10).snapshot_id
    fleet.apps["id-002"][0]["version"] = "121.0"
    b = fleet.collect(store, hour=10, minute=1).snapshot_id
    return base, a, b


def published_changes(messages: list[dict]) -> list[tuple[str, str, str]]:
    bodies = [json.loads(message["Body"]) for message in messages]
    return sorted((body["change_type"], body["device_id"], body["previous_snapshot_id"]) for body in bodies
                  if body["change_type"] != "snapshot_summary")


@pytest.mark.parametrize("order", ["a_first", "b_first"])
def test_overlapping_runs_diff_against_the_latest_committed_snapshot(deployed, lambda_context, order):
    base, a, b = overlapping_runs(S3ObjectStore(boto3.client("s3"), BUCKET))
    handler = load_handler("differ")
    results = {snapshot_id: handler.lambda_handler(manifest_event(manifest_key(snapshot_id)), lambda_context)
               for snapshot_id in ((a, b) if order == "a_first" else (b, a))}
    assert results[a]["previous_snapshot_id"] == base and results[b]["previous_snapshot_id"] == a
    assert published_changes(deployed()) == [("app_updated", "id-002", a), ("device_changed", "id-001", base)]


def test_a_run_that_commits_after_a_newer_one_was_diffed_publishes_nothing_twice(deployed, lambda_context):
    """B's differ runs while A is still writing (its manifest not there yet): B covers A's changes."""
    s3 = boto3.client("s3")
    base, a, b = overlapping_runs(S3ObjectStore(s3, BUCKET))
    a_manifest = s3.get_object(Bucket=BUCKET, Key=manifest_key(a))["Body"].read()
    s3.delete_object(Bucket=BUCKET, Key=manifest_key(a))  # A not committed yet
    handler = load_handler("differ")
    assert handler.lambda_handler(manifest_event(manifest_key(b)), lambda_context)["previous_snapshot_id"] == base
    s3.put_object(Bucket=BUCKET, Key=manifest_key(a), Body=a_manifest)  # A commits
    result = handler.lambda_handler(manifest_event(manifest_key(a)), lambda_context)
    assert result["superseded_by"] == b and result["published_messages"] == 0
    # Redelivered, each trigger publishes nothing again.
    for snapshot_id in (a, b):
        handler.lambda_handler(manifest_event(manifest_key(snapshot_id)), lambda_context)

    messages = deployed()
    assert published_changes(messages) == [("app_updated", "id-002", base), ("device_changed", "id-001", base)]
    ids = [json.loads(message["Body"])["event_id"] for message in messages]
    assert len(ids) == len(set(ids)) == 3  # two changes and B's summary


def test_a_stale_claim_loses_no_change(deployed, lambda_context, monkeypatch):
    """Issue 19.5. B's differ claimed 09:00 while A was still writing, then failed before comparing (S3 said
    500). A commits; its differ finds 09:00 held by B and publishes nothing, counting on B. B's retry must
    then cover A's changes (FileVault turned off): it keeps its claim instead of moving on to A."""
    s3 = boto3.client("s3")
    base, a, b = overlapping_runs(S3ObjectStore(s3, BUCKET))
    a_manifest = s3.get_object(Bucket=BUCKET, Key=manifest_key(a))["Body"].read()
    s3.delete_object(Bucket=BUCKET, Key=manifest_key(a))
    handler = load_handler("differ")
    reading = S3ObjectStore.open

    def s3_down_for_tables(self, key):
        if key.startswith("snapshots/devices/"):
            raise RuntimeError("simulated S3 500 on GetObject")
        return reading(self, key)
    monkeypatch.setattr(S3ObjectStore, "open", s3_down_for_tables)
    with pytest.raises(RuntimeError):
        handler.lambda_handler(manifest_event(manifest_key(b)), lambda_context)
    monkeypatch.setattr(S3ObjectStore, "open", reading)
    s3.put_object(Bucket=BUCKET, Key=manifest_key(a), Body=a_manifest)  # A commits
    assert handler.lambda_handler(manifest_event(manifest_key(a)), lambda_context)["superseded_by"] == b
    assert handler.lambda_handler(manifest_event(manifest_key(b)), lambda_context)["previous_snapshot_id"] == base
    assert published_changes(deployed()) == [("app_updated", "id-002", base), ("device_changed", "id-001", base)]


def test_a_retry_keeps_the_previous_it_computed_events_against(deployed, lambda_context):
    s3 = boto3.client("s3")
    base, a, b = overlapping_runs(S3ObjectStore(s3, BUCKET))
    a_manifest = s3.get_object(Bucket=BUCKET, Key=manifest_key(a))["Body"].read()
    s3.delete_object(Bucket=BUCKET, Key=manifest_key(a))
    handler = load_handler("differ")
    with pytest.raises(DeadlineExceeded):  # changes file written against 09:00, then no time to publish
        handler.lambda_handler(manifest_event(manifest_key(b)), FakeLambdaContext(remaining_ms=5_000))
    s3.put_object(Bucket=BUCKET, Key=manifest_key(a), Body=a_manifest)
    assert handler.lambda_handler(manifest_event(manifest_key(b)), lambda_context)["previous_snapshot_id"] == base
    assert handler.lambda_handler(manifest_event(manifest_key(a)), lambda_context)["superseded_by"] == b
    assert published_changes(deployed()) == [("app_updated", "id-002", base), ("device_changed", "id-001", base)]


class SteppingContext(FakeLambdaContext):
    """A Lambda context whose clock moves one second each time the remaining time is read."""

    def get_remaining_time_in_millis(self) -> int:
        self.remaining_ms -= 1000
        return self.remaining_ms


def test_a_comparison_cut_short_by_the_deadline_goes_on_where_it_stopped(deployed, monkeypatch):
    """Each attempt has ~4 deadline checks before the 30 s margin: about 64 of 100 devices, then the rest.
    Attempt after attempt, each going further, on the in-memory store: test_differ_checkpoint.py."""
    monkeypatch.setenv("MAX_EVENTS_PER_RUN", "1000")
    store = S3ObjectStore(boto3.client("s3"), BUCKET)
    fleet = FakeFleet.of(100)
    fleet.collect(store, hour=10)
    fleet.check_in()
    for item in fleet.devices.values():
        item["agent_version"] = "4.6.0"  # a mass update: one device_changed per device
    fleet.collect(store, hour=11)
    handler = load_handler("differ")

    attempts, checkpoints = 0, []
    while True:
        attempts += 1
        assert attempts <= 10, "no progress from one attempt to the next"
        try:
            result = handler.lambda_handler(manifest_event(manifest_key(SECOND)), SteppingContext(remaining_ms=34_000))
            break
        except DeadlineExceeded as stopped:
            if "stopped comparing" not in str(stopped):  # the comparison is done; publishing stopped in time
                continue
            assert "Nothing was published yet" in str(stopped) and "goes on from there" in str(stopped)
            checkpoint = json.loads(store.get(f"changes/_published/{SECOND}/comparison.json"))
            checkpoints.append((checkpoint["after_device"], checkpoint["events"]))
            assert list(store.list_keys(changes_key(SECOND))) == []  # no changes file until the comparison ends
    assert len(checkpoints) >= 1 and checkpoints == sorted(checkpoints)
    assert len({after for after, _ in checkpoints}) == len(checkpoints)  # every attempt got further
    assert result["events"] == 100 and not result["suppressed"]
    bodies = [json.loads(message["Body"]) for message in deployed()]
    assert sorted(body.get("device_id", "~") for body in bodies) == [f"id-{n:03d}" for n in range(100)] + ["~"]
    assert len({body["event_id"] for body in bodies}) == 101
    # The changes file holds the events in device order, as an uninterrupted run writes them.
    changes = [json.loads(line) for line in gzip.decompress(store.get(changes_key(SECOND))).splitlines()]
    assert [event["device_id"] for event in changes] == [f"id-{n:03d}" for n in range(100)]
    assert [key for key in store.list_keys(f"changes/_published/{SECOND}/") if "comparison" in key] == []


def follow_the_advice(error: Exception) -> str:
    """The first key the error says to delete (s3://bucket/key or a bare key), deleted as a person would."""
    match = re.search(r"delete (s3://[^/\s]+/)?((?:snapshots|changes)/\S+?)[,.]?(?:\s|$)", str(error))
    assert match, f"no remedy to follow in: {error}"
    boto3.client("s3").delete_object(Bucket=BUCKET, Key=match.group(2))
    return match.group(2)


def test_following_the_advice_for_a_lost_part_sends_no_change_twice(deployed, lambda_context):
    """Issue 19.6. B (FileVault off on id-001) was diffed and published; then a part of B is lost, so C
    cannot be diffed. Doing what the errors say must not publish B's high alert a second time."""
    store = S3ObjectStore(boto3.client("s3"), BUCKET)
    fleet = FakeFleet.of(3)
    a = fleet.collect(store, hour=9).snapshot_id
    fleet.details["id-001"]["filevault"]["filevault_enabled"] = False
    b = fleet.collect(store, hour=10)
    fleet.apps["id-002"][0]["version"] = "121.0"
    c = fleet.collect(store, hour=11).snapshot_id
    handler = load_handler("differ")
    handler.lambda_handler(manifest_event(manifest_key(a)), lambda_context)
    handler.lambda_handler(manifest_event(manifest_key(b.snapshot_id)), lambda_context)
    boto3.client("s3").delete_object(Bucket=BUCKET, Key=b.table_keys("device_apps")[0])  # lost by a lifecycle rule

    deleted = []
    for _ in range(4):
        try:
            result = handler.lambda_handler(manifest_event(manifest_key(c)), lambda_context)
            break
        except KandjiSnapshotsError as error:
            deleted.append(follow_the_advice(error))
    else:
        pytest.fail(f"still failing after deleting {deleted}")
    bodies = [json.loads(message["Body"]) for message in deployed()]
    filevault_off = [body for body in bodies
                     if body["change_type"] == "device_changed" and body["device_id"] == "id-001"]
    assert len(filevault_off) == 1 and filevault_off[0]["severity"] == "high"  # B's, sent once
    assert deleted == [manifest_key(b.snapshot_id)] and result["previous_snapshot_id"] == a
    assert [(body["change_type"], body["device_id"]) for body in bodies if body["snapshot_id"] == c
            and body["change_type"] != "snapshot_summary"] == [("app_updated", "id-002")]


@pytest.mark.parametrize("damage", ["cut_short", "part_missing", "part_cut_short"])
def test_an_unreadable_checkpoint_is_discarded_and_the_comparison_starts_over(deployed, monkeypatch, damage, caplog,
                                                                              capsys):
    """Issue 19.7. A checkpoint cut short, or listing a part that is gone or cut short, fails no retry: it
    is deleted with a warning that names it, and the comparison starts over (nothing was published from it)."""
    monkeypatch.setenv("MAX_EVENTS_PER_RUN", "1000")
    store = S3ObjectStore(boto3.client("s3"), BUCKET)
    fleet = FakeFleet.of(100)
    fleet.collect(store, hour=10)
    for item in fleet.devices.values():
        item["agent_version"] = "4.6.0"
    fleet.collect(store, hour=11)
    handler = load_handler("differ")
    with pytest.raises(DeadlineExceeded, match="stopped comparing"):
        handler.lambda_handler(manifest_event(manifest_key(SECOND)), SteppingContext(remaining_ms=34_000))
    checkpoint_key = f"changes/_published/{SECOND}/comparison.json"
    [part] = json.loads(store.get(checkpoint_key))["parts"]
    if damage == "cut_short":
        store.put(checkpoint_key, store.get(checkpoint_key)[:30])
    elif damage == "part_missing":
        store.delete([part])
    else:
        store.put(part, store.get(part)[:40])

    result = handler.lambda_handler(manifest_event(manifest_key(SECOND)), FakeLambdaContext())
    assert result["events"] == 100
    bodies = [json.loads(message["Body"]) for message in deployed()]
    assert sorted(body.get("device_id", "~") for body in bodies) == [f"id-{n:03d}" for n in range(100)] + ["~"]
    # The handler's JSON log line (stdout), or the record when the package's loggers propagate
    logged = capsys.readouterr().out + caplog.text
    assert f"the differ's checkpoint s3://{BUCKET}/{checkpoint_key} cannot be read" in logged
    assert "starts over" in logged
    assert [key for key in store.list_keys(f"changes/_published/{SECOND}/") if "comparison" in key] == []


def test_a_run_whose_done_marker_was_lost_keeps_its_completed_claim():
    """The claim on the previous snapshot is completed once the diff is published; a later attempt of the
    same snapshot (its done marker lost) finds its own completed claim, not someone else's."""
    run = Run(lambda fleet: fleet.details["id-001"]["filevault"].update(filevault_enabled=False)).run()
    run.store.delete([f"changes/_published/{SECOND}/done.json"])
    again = SnapshotDiffer(run.store, run.publisher).run(SECOND)
    assert again.previous_snapshot_id == FIRST and again.published_events == 0
    assert [event["device_id"] for event in run.events] == ["id-001"]  # the change went out once
