"""Fault tolerance, proven against the simulator's fault modes and moto's S3, SNS and SQS.

Each test injects one kind of fault into a real run (the collector and differ handlers, the
simulator over HTTP on 127.0.0.1, moto's server through AWS_ENDPOINT_URL) and checks that

- no partial snapshot is committed (no manifest, no parts left behind),
- no device is reported removed because of the fault,
- nothing is published twice (SQS messages counted by event_id), and
- the error says what failed and what to do.

Faults whose retries would take minutes with the production back-off (a fault that never
ends, read timeouts) drive `SnapshotCollector` + `KandjiClient` directly with a short
`RetryPolicy`; everything else goes through the handlers.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
from aws_helpers import BUCKET, all_keys, create_bucket, read_rows
from botocore.exceptions import ClientError
from conftest import FakeLambdaContext
from handler_pipeline import TOKEN, Pipeline, assert_complete, committed_ids, snapshot_keys, the_manifest
from kandji_fakes import simulator_client

from kandji_snapshots.collect import runtime as collector_runtime
from kandji_snapshots.collect.collector import SnapshotCollector
from kandji_snapshots.collect.runtime import build_collector
from kandji_snapshots.diff import runtime as differ_runtime
from kandji_snapshots.diff.differ import SnapshotIncomplete
from kandji_snapshots.diff.publisher import PublishError, SnsPublisher
from kandji_snapshots.errors import (
    DeadlineExceeded,
    KandjiApiError,
    KandjiAuthError,
    KandjiSnapshotsError,
    RateLimitExhausted,
    SnapshotWriteError,
)
from kandji_snapshots.kandji.client import RetryPolicy
from kandji_snapshots.kandji.config import KandjiCredentials, validate_api_url
from kandji_snapshots.settings import CollectorSettings
from kandji_snapshots.snapshots.layout import manifest_key, published_marker_prefix
from kandji_snapshots.snapshots.storage import MemoryObjectStore, S3ObjectStore
from simulator import Fleet, KandjiSimulator
from simulator.server import MAINTENANCE_HTML

ROOT = Path(__file__).resolve().parent.parent
NOTHING_COMMITTED = "Nothing was committed; the next scheduled run will try again"
# Retries in milliseconds, not seconds: for faults that never end. The timeouts are for hangs only: a busy
# machine may take a second to answer on loopback, and that must not turn into a different failure.
FAST_RETRY = RetryPolicy(max_attempts=4, max_rate_limited_attempts=4, base_backoff=0.01, max_backoff=0.05,
                         connect_timeout=10.0, read_timeout=30.0)
# For the read-timeout tests: the simulator holds the delayed answers for twice as long (a slow machine only
# makes them later), and every other answer has this long, on each of its attempts.
READ_TIMEOUT = 2.0
SHORT_READ_TIMEOUT = replace(FAST_RETRY, read_timeout=READ_TIMEOUT)


def direct_collector(sim: KandjiSimulator, retry: RetryPolicy = FAST_RETRY, store=None) -> SnapshotCollector:
    """The collector built as the handler builds it, but with a short retry policy and no budget."""
    credentials = KandjiCredentials(validate_api_url(sim.api_url, allow_insecure_localhost=True), TOKEN)
    options = CollectorSettings(requests_per_second=1000, max_workers=8, request_budget=None, hourly_reserve=0)
    return build_collector(credentials, store or S3ObjectStore(boto3.client("s3"), BUCKET), options,
                           retry=retry).collector


def change_types(messages: list[dict]) -> Counter:
    return Counter(message["change_type"] for message in messages)


# --- 429 storms -------------------------------------------------------------------------------------

def test_a_429_storm_is_waited_out_and_loses_no_device(pipeline):
    run = pipeline(Fleet.generate(40, seed=21))
    run.sim.faults.rate_limit_burst(times=20, retry_after=0)  # "now", twenty times over
    # No Retry-After: the client backs off by itself (exponentially, per request: spread over three requests).
    run.sim.faults.rate_limit_burst(times=3, retry_after=None, path_regex=r"/details$")
    manifest = the_manifest(run.collect())
    assert_complete(manifest, run.fleet)
    assert manifest["requests"]["rate_limited"] >= 23
    assert run.sim.faults.pending() == 0


def test_a_429_storm_that_never_ends_fails_clearly_and_commits_nothing(pipeline, capsys):
    run = pipeline(Fleet.generate(10, seed=21))
    run.sim.faults.rate_limit_burst(times=None, retry_after=0)
    with pytest.raises(RateLimitExhausted) as failure:
        run.collect()
    message = str(failure.value)
    assert "GET /api/v1/devices kept answering 429 (rate limited) after 30 tries" in message
    assert "rate limit is spent, possibly by other integrations" in message and NOTHING_COMMITTED in message
    assert snapshot_keys() == []
    assert '"RateLimitExhausted"' in capsys.readouterr().out  # the alarm's metric


# --- 5xx bursts and HTML error pages ---------------------------------------------------------------

def test_5xx_bursts_and_html_error_pages_are_retried_and_lose_no_device(pipeline):
    run = pipeline(Fleet.generate(40, seed=22))
    faults = run.sim.faults
    devices = run.fleet.device_ids()
    # Each fault is bound to a device, a few times at most: faults on any details request could all land on
    # one device's retries when the machine is busy (11 in a row against 8 attempts), failing the run by chance.
    faults.fail(r"/devices$", status=502, times=2, body=MAINTENANCE_HTML, content_type="text/html; charset=utf-8")
    for device_id in devices[:4]:
        faults.fail(rf"/devices/{device_id}/details$", status=503, times=2)
        faults.fail(rf"/devices/{device_id}/apps$", status=500, times=1)
    for device_id in devices[4:6]:
        faults.fail(rf"/devices/{device_id}/apps$", status=504, times=1,
                    body="<html><body>Gateway Timeout</body></html>", content_type="text/html")
    for device_id in devices[6:9]:
        faults.malformed(rf"/devices/{device_id}/details$", times=1, kind="html")  # a 200 with a maintenance page
    manifest = the_manifest(run.collect())
    assert_complete(manifest, run.fleet)
    assert manifest["requests"]["server_errors"] >= 16 and faults.pending() == 0


@pytest.mark.parametrize("status, body, content_type", [
    (503, None, None),
    (502, MAINTENANCE_HTML, "text/html; charset=utf-8"),
])
def test_a_5xx_that_persists_fails_naming_the_request_and_commits_nothing(aws, status, body, content_type):
    create_bucket()
    fleet = Fleet.generate(12, seed=22)
    broken = fleet.device_ids()[5]
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        sim.faults.fail(f"/devices/{broken}/details$", status=status, times=None, body=body,
                        content_type=content_type)
        with pytest.raises(KandjiApiError) as failure:
            direct_collector(sim).collect()
    message = str(failure.value)
    assert f"GET /api/v1/devices/{broken}/details failed after retries: {status} from the Kandji API" in message
    assert NOTHING_COMMITTED in message and "<html" not in message.lower()
    assert snapshot_keys() == []


# --- connection resets and read timeouts ---------------------------------------------------------------

def test_connection_resets_are_retried_and_lose_no_device(pipeline):
    run = pipeline(Fleet.generate(40, seed=23))
    run.sim.faults.reset_connection(r"/devices$", times=1)
    run.sim.faults.reset_connection(r"/apps$", times=4)
    run.sim.faults.reset_connection(r"/details$", times=2)
    manifest = the_manifest(run.collect())
    assert_complete(manifest, run.fleet)
    assert manifest["requests"]["retries"] >= 7 and run.sim.stats.status_counts[0] >= 7


def reset_the_device_list(sim: KandjiSimulator) -> tuple[str, RetryPolicy]:
    sim.faults.reset_connection(r"/devices$", times=None)
    return f"GET /api/v1/devices failed after retries: ConnectionError talking to 127.0.0.1:{sim.port}", FAST_RETRY


def slow_apps_of_one_device(sim: KandjiSimulator) -> tuple[str, RetryPolicy]:
    slow = sim.fleet.device_ids()[3]
    sim.faults.delay(f"/devices/{slow}/apps$", seconds=2 * READ_TIMEOUT, times=None)
    # Tried twice: enough to show it is retried, then named.
    return (f"GET /api/v1/devices/{slow}/apps failed after retries: ReadTimeout talking to 127.0.0.1:",
            replace(SHORT_READ_TIMEOUT, max_attempts=2))


@pytest.mark.parametrize("persistent_fault", [reset_the_device_list, slow_apps_of_one_device],
                         ids=["connection-reset", "read-timeout"])
def test_a_fault_that_persists_fails_naming_the_request(aws, persistent_fault):
    create_bucket()
    with KandjiSimulator(Fleet.generate(8, seed=23), token=TOKEN) as sim:
        expected, retry = persistent_fault(sim)  # the start of the error message, and the retry policy
        with pytest.raises(KandjiApiError) as failure:
            direct_collector(sim, retry).collect()
    message = str(failure.value)
    assert expected in message
    assert NOTHING_COMMITTED in message and snapshot_keys() == []


def test_read_timeouts_are_retried_and_lose_no_device(aws):
    create_bucket()
    fleet = Fleet.generate(20, seed=24)
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        sim.faults.delay(r"/details$", seconds=2 * READ_TIMEOUT, times=3)
        sim.faults.delay(r"/devices$", seconds=2 * READ_TIMEOUT, times=1)
        manifest = direct_collector(sim, SHORT_READ_TIMEOUT).collect().document
    assert_complete(manifest, fleet)
    assert manifest["requests"]["retries"] >= 4


# --- bodies that are not what the endpoint documents ---------------------------------------------------

def test_malformed_bodies_are_retried_and_the_snapshot_is_faithful(pipeline):
    run = pipeline(Fleet.generate(40, seed=25))
    faults = run.sim.faults
    faults.malformed(r"/devices$", kind="truncated")
    faults.malformed(r"/devices$", kind="incomplete")
    faults.malformed(r"/details$", times=2, kind="not_json")
    faults.malformed(r"/details$", times=2, kind="truncated")
    faults.malformed(r"/apps$", times=2, kind="html")
    faults.malformed(r"/apps$", times=2, kind="incomplete")
    manifest = the_manifest(run.collect())
    assert_complete(manifest, run.fleet)
    assert faults.pending() == 0 and manifest["requests"]["retries"] >= 10


@pytest.mark.parametrize("kind, says", [
    ("truncated", "a 200 whose body is not JSON (application/json)"),
    ("not_json", "a 200 whose body is not JSON (application/json)"),
    ("html", "a 200 whose body is not JSON (text/html; charset=utf-8)"),
    ("incomplete", "a response from 127.0.0.1:"),  # the connection closed before Content-Length bytes
])
def test_a_body_that_stays_malformed_fails_naming_the_endpoint(aws, kind, says):
    create_bucket()
    with KandjiSimulator(Fleet.generate(8, seed=25), token=TOKEN) as sim:
        sim.faults.malformed(r"/devices$", times=None, kind=kind)
        with pytest.raises(KandjiApiError) as failure:
            direct_collector(sim).collect()
        assert sim.stats.by_endpoint["devices"] == FAST_RETRY.max_attempts  # retried, then given up
    message = str(failure.value)
    assert message.startswith("GET /api/v1/devices failed after retries: ") and says in message
    if kind == "incomplete":
        assert "that broke off or could not be decoded (ChunkedEncodingError)" in message
    assert NOTHING_COMMITTED in message and failure.value.endpoint == "devices"
    assert snapshot_keys() == []


def test_a_details_body_that_stays_malformed_names_the_device(aws):
    create_bucket()
    fleet = Fleet.generate(8, seed=25)
    device_id = fleet.device_ids()[2]
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        sim.faults.malformed(f"/devices/{device_id}/details$", times=None, kind="truncated")
        with pytest.raises(KandjiApiError, match=f"GET /api/v1/devices/{device_id}/details failed after retries: "
                                                 r"a 200 whose body is not JSON"):
            direct_collector(sim).collect()
    assert snapshot_keys() == []


# --- a device-list page that repeats the previous one ---------------------------------------------------

def test_a_repeated_device_page_is_fetched_again_and_every_device_listed_once(pipeline):
    # Two pages: the list going on past a repeat to further pages is test_paging.py's (canned pages).
    run = pipeline(Fleet.generate(320, seed=26, apps_per_device=(0, 2)))
    run.sim.faults.repeat_page(times=2)  # the second page, and its first retry, get the first page again
    manifest = the_manifest(run.collect())
    assert_complete(manifest, run.fleet)
    assert run.sim.faults.pending() == 0
    offsets = [query.split("offset=")[1].split("&")[0] for _, _, path, query, _ in run.sim.stats.request_log
               if path.endswith("/devices")]
    # Pages overlap by one device (see the next test); a repeat is asked again; a short page ends the list.
    assert offsets == ["0", "299", "299", "299"]


def remove_while_listing(fleet: Fleet, victims: list[str]) -> None:
    """Remove the next of `victims` just before every second device-list page is served."""
    ordered, calls = fleet._ordered, []

    def removing(ordering):
        calls.append(ordering)
        if len(calls) % 2 == 0 and victims:
            fleet.remove(victims.pop(0))
        return ordered(ordering)

    fleet._ordered = removing


def test_a_device_removed_while_the_list_is_read_costs_no_other_device():
    # The client over HTTP: the list read again is what the snapshot holds (the collector's rows are the
    # listed devices), and a device gone from the list is published removed once (test_fleet_rules.py).
    fleet = Fleet.generate(320, seed=35, apps_per_device=(0, 1))
    ids = fleet.device_ids()
    victim = ids[10]  # on the first page: every later device moves one offset down before the second page
    remove_while_listing(fleet, [victim])
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        listed = [device["device_id"] for device in simulator_client(sim, TOKEN).list_devices()]
        requests = sim.stats.by_endpoint["devices"]
    assert sorted(listed) == sorted(set(ids) - {victim}) and len(listed) == len(set(listed))  # ids[300] not skipped
    assert requests == 4  # 2 pages, then both again


def test_a_device_list_that_keeps_changing_fails_clearly(aws):
    create_bucket()
    fleet = Fleet.generate(320, seed=35, apps_per_device=(0, 1))
    remove_while_listing(fleet, fleet.device_ids()[:10])
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        with pytest.raises(KandjiApiError) as failure:
            direct_collector(sim).collect()
    message = str(failure.value)
    assert "GET /api/v1/devices: the device list changed while it was read, 4 times in a row" in message
    assert NOTHING_COMMITTED in message and snapshot_keys() == []


def test_paging_that_never_advances_fails_clearly(aws):
    create_bucket()
    with KandjiSimulator(Fleet.generate(320, seed=26, apps_per_device=(0, 1)), token=TOKEN) as sim:
        sim.faults.repeat_page(times=None)
        with pytest.raises(KandjiApiError) as failure:
            direct_collector(sim).collect()
    message = str(failure.value)
    assert "GET /api/v1/devices?offset=299 kept returning devices already listed" in message
    assert "paging is not advancing. Nothing was committed; try again later." in message
    assert snapshot_keys() == []


# --- a fault between two good runs: nothing partial, no device reported removed --------------------------

def _revoke(run: Pipeline, context: FakeLambdaContext):
    run.sim.faults.revoke_token_after(25)
    return KandjiAuthError, ["401 Unauthorized: the API token is wrong, revoked or expired",
                             "store it in the Kandji secret"]


def _outage(run: Pipeline, context: FakeLambdaContext):
    run.sim.faults.fail(r"/details$", status=503, times=None)
    context.remaining_ms = 48_000  # 3 s once the collector's write margin is kept back
    # Backing off until then takes no real time on the run's fake clock.
    return KandjiSnapshotsError, ["503 from the Kandji API", NOTHING_COMMITTED]


def _s3_denied(run: Pipeline, context: FakeLambdaContext):
    deny_put(f"arn:aws:s3:::{BUCKET}/snapshots/device_apps/*")
    return SnapshotWriteError, [f"Writing s3://{BUCKET}/snapshots/device_apps/", "failed (",
                                "the function's role may write to it. Nothing was committed."]


@pytest.mark.parametrize("fault", [_revoke, _outage, _s3_denied], ids=["token-revoked", "api-outage", "s3-denied"])
def test_a_failed_run_between_two_good_ones_commits_nothing_and_reports_no_removal(pipeline, fault, capsys):
    run = pipeline(Fleet.generate(40, seed=27))
    first = run.collect()["snapshot_id"]
    committed = snapshot_keys()
    demo = run.fleet.apply_demo_changes()  # one device really removed, one enrolled, ...

    context = FakeLambdaContext()
    error, says = fault(run, context)
    with pytest.raises(error) as failure:
        run.collect(context)
    assert all(text in str(failure.value) for text in says), str(failure.value)
    assert snapshot_keys() == committed  # no manifest, no parts of the failed run left behind
    assert '"CollectionFailed"' in capsys.readouterr().out

    run.sim.faults.clear()
    boto3.client("s3").delete_bucket_policy(Bucket=BUCKET)  # no-op unless the fault set one
    third = run.collect()["snapshot_id"]
    assert committed_ids() == [first, third]
    run.diff(first)
    result = run.diff(third)
    assert result["previous_snapshot_id"] == first
    messages = run.published_once()
    assert [m["device_id"] for m in messages if m["change_type"] == "device_removed"] == [
        demo["removed"]["device_id"]]  # the real removal, and only that
    assert [m["device_id"] for m in messages if m["change_type"] == "device_added"] == [
        demo["enrolled"]["device_id"]]


# --- devices unenrolled mid-run ---------------------------------------------------------------------------

def test_a_device_unenrolled_mid_run_is_not_reported_removed_until_a_complete_run_no_longer_lists_it(pipeline):
    run = pipeline(Fleet.generate(30, seed=28))
    ids = run.fleet.device_ids()
    flaky, gone = ids[4], ids[11]
    first = run.collect()["snapshot_id"]
    run.diff(first)

    # A 404 that was a glitch: skipped once, listed again next time, never added or removed.
    run.sim.faults.unenroll_during_run(flaky)
    second = run.collect()
    assert [item["device_id"] for item in the_manifest(second)["skipped_devices"]] == [flaky]
    assert run.diff(second["snapshot_id"])["events"] == 0
    run.sim.faults.clear()
    third = run.collect()["snapshot_id"]
    assert run.diff(third)["events"] == 0

    # A real unenrolment: 404 mid-run, then no longer listed. Reported removed once, by the run that confirms it.
    run.sim.faults.unenroll_during_run(gone)
    fourth = run.collect()["snapshot_id"]
    assert run.diff(fourth)["events"] == 0
    run.sim.faults.clear()
    item = run.fleet.remove(gone)
    fifth = run.collect()["snapshot_id"]
    assert run.diff(fifth)["events"] == 1

    messages = run.published_once()
    assert change_types(messages) == {"snapshot_summary": 5, "device_removed": 1}
    [removed] = [message for message in messages if message["change_type"] == "device_removed"]
    assert (removed["device_id"], removed["serial_number"], removed["snapshot_id"]) == (
        gone, item["serial_number"], fifth)
    # Its rows were carried through the 404 run: the removal shows what was last known of its apps.
    assert removed["apps"] and all(app["app_name"] for app in removed["apps"])


# A change hidden by one 404 glitch, reported once by the next complete read, and an OS downgrade whose details
# are read a run later, reported once: test_skipped_devices.py, in memory (the 404 path over HTTP is the test above).


def test_new_devices_a_budgeted_run_cannot_afford_have_unknown_apps_announced_once_when_read(pipeline, monkeypatch):
    run = pipeline(Fleet.generate(10, seed=33, platforms={"Mac": 1.0}))
    first = run.collect()["snapshot_id"]
    run.diff(first)
    new = sorted(run.fleet.enroll("Mac") for _ in range(6))
    # The list, the six posture categories and the six tenant sources (about 14 requests), then details + apps
    # of a few devices.
    monkeypatch.setenv("KANDJI_REQUEST_BUDGET", "24")
    second = run.collect()
    assert 0 < the_manifest(second)["refreshed_devices"] < len(new)
    run.diff(second["snapshot_id"])
    monkeypatch.delenv("KANDJI_REQUEST_BUDGET")
    third = run.collect()["snapshot_id"]
    run.diff(third)
    fourth = run.collect()["snapshot_id"]
    run.diff(fourth)

    messages = run.published_once()
    added = {m["device_id"]: m["apps"] for m in messages if m["change_type"] == "device_added"}
    assert sorted(added) == new
    unread = sorted(device_id for device_id, apps in added.items() if apps is None)  # unknown, not "no apps"
    assert len(unread) == len(new) - the_manifest(second)["refreshed_devices"]
    assert all(len(added[device_id]) == run.fleet.app_count(device_id) for device_id in set(new) - set(unread))
    first_read = [m for m in messages if m["change_type"] == "device_apps_first_read"]
    assert [(m["device_id"], m["snapshot_id"]) for m in first_read] == [(device_id, third) for device_id in unread]
    assert all(len(m["apps"]) == run.fleet.app_count(m["device_id"]) > 0 for m in first_read)
    assert change_types(messages)["app_installed"] == 0


# --- S3 write failures mid-snapshot ------------------------------------------------------------------------

def deny_put(resource: str) -> None:
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": resource}]}
    boto3.client("s3").put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))


@pytest.mark.parametrize("denied", ["snapshots/device_apps/", "snapshots/manifests/"])
def test_an_s3_write_failure_mid_snapshot_leaves_no_manifest_and_no_parts(pipeline, monkeypatch, denied):
    run = pipeline(Fleet.generate(60, seed=29))
    # Small parts: devices and details parts are written while the apps are still being fetched.
    build = collector_runtime.build_collector
    monkeypatch.setattr(collector_runtime, "build_collector", lambda credentials, store, settings, **wiring: build(
        credentials, store, replace(settings, rows_per_part=25), **wiring))
    deny_put(f"arn:aws:s3:::{BUCKET}/{denied}*")
    with pytest.raises(SnapshotWriteError) as failure:
        run.collect()
    message = str(failure.value)
    assert message.startswith(f"Writing s3://{BUCKET}/{denied}dt=2026-11-23/20261123T100000Z")
    assert "Check that the bucket exists and the function's role may write to it. Nothing was committed." in message
    assert snapshot_keys() == []

    boto3.client("s3").delete_bucket_policy(Bucket=BUCKET)
    manifest = the_manifest(run.collect())
    assert_complete(manifest, run.fleet)
    assert len(manifest["tables"]["device_apps"]["keys"]) > 1


# --- SNS failures -------------------------------------------------------------------------------------------

class FlakySns:
    """Moto's SNS client, with failures: entries reported Failed, or the call itself raising.

    `fail_entries(call_number, entries) -> ids to fail` and `raise_on(call_number) -> bool` decide per call.
    """

    def __init__(self, client, fail_entries=None, raise_on=None):
        self._client = client
        self._fail_entries = fail_entries or (lambda call, entries: set())
        self._raise_on = raise_on or (lambda call: False)
        self.calls = 0

    def publish_batch(self, TopicArn, PublishBatchRequestEntries):
        self.calls += 1
        if self._raise_on(self.calls):
            error = {"Code": "KMSAccessDenied", "Message": "User is not authorized to use the key"}
            raise ClientError({"Error": error}, "PublishBatch")
        failing = self._fail_entries(self.calls, PublishBatchRequestEntries)
        entries = [entry for entry in PublishBatchRequestEntries if entry["Id"] not in failing]
        response = self._client.publish_batch(TopicArn=TopicArn, PublishBatchRequestEntries=entries) if entries \
            else {"Successful": [], "Failed": []}
        failed = [{"Id": entry["Id"], "Code": "InternalError", "Message": "try again", "SenderFault": False}
                  for entry in PublishBatchRequestEntries if entry["Id"] in failing]
        return {"Successful": response.get("Successful", []), "Failed": response.get("Failed", []) + failed}


def flaky_sns(monkeypatch, **behaviour) -> FlakySns:
    holder = {}

    def publisher(client, topic_arn):
        holder["sns"] = FlakySns(client, **behaviour)
        return SnsPublisher(holder["sns"], topic_arn, sleep=lambda seconds: None)

    monkeypatch.setattr(differ_runtime, "SnsPublisher", publisher)
    return holder


def many_changes(run: Pipeline, count: int = 24) -> None:
    """`count` app installs on different devices: more than two PublishBatch calls of 10."""
    for device_id in run.fleet.device_ids()[:count]:
        run.fleet.install_app(device_id, "Fault Tool", "com.example.fault-tool", "1.0")


def two_snapshots(run: Pipeline) -> tuple[str, str]:
    first = run.collect()["snapshot_id"]
    run.diff(first)
    many_changes(run)
    second = run.collect()["snapshot_id"]
    run.received()  # the first snapshot's summary: later counts are of the second's messages
    return first, second


# Both snapshots' summaries and the second's 24 installs, each received once.
EACH_ONCE = {"snapshot_summary": 2, "app_installed": 24}


class Outage:
    """A fault the test gives SNS lasts until `over` (then the differ's trigger is retried)."""
    over = False


def test_publish_batch_entries_that_fail_for_a_while_are_retried_and_published_once(pipeline, monkeypatch):
    run = pipeline(Fleet.generate(30, seed=30))
    first, second = two_snapshots(run)
    # The first two calls fail three entries each; the publisher sends those again.
    flaky_sns(monkeypatch, fail_entries=lambda call, entries: {e["Id"] for e in entries[1:4]} if call <= 2 else set())
    result = run.diff(second)
    assert result["events"] == 24 and result["published_messages"] == 25
    assert change_types(run.published_once()) == EACH_ONCE


def test_publish_batch_entries_that_keep_failing_stop_the_run_and_its_retry_publishes_only_the_rest(
        pipeline, monkeypatch):
    run = pipeline(Fleet.generate(30, seed=30))
    first, second = two_snapshots(run)
    outage = Outage()
    # The second batch's last three entries fail on every attempt until SNS recovers.
    flaky_sns(monkeypatch, fail_entries=lambda call, entries: set() if outage.over or call == 1
              else {e["Id"] for e in entries[-3:]})
    with pytest.raises(PublishError) as failure:
        run.diff(second)
    message = str(failure.value)
    assert "3 of 10 messages failed after 5 attempt(s)" in message and "InternalError try again" in message
    assert f"Snapshot {second}: 17 of 24 change events are published" in message
    assert "invoking the differ again with the same manifest event) publishes only the rest" in message
    assert len(run.received()) == 17

    outage.over = True  # EventBridge / Lambda retries the same trigger
    assert run.diff(second)["published_messages"] == 8  # the 7 left over and the summary
    assert run.diff(second)["already_done"]  # and once more: nothing
    assert change_types(run.published_once()) == EACH_ONCE


def test_a_publish_call_that_raises_stops_the_run_and_its_retry_publishes_only_the_rest(pipeline, monkeypatch):
    run = pipeline(Fleet.generate(30, seed=30))
    first, second = two_snapshots(run)
    outage = Outage()
    flaky_sns(monkeypatch, raise_on=lambda call: call == 2 and not outage.over)
    with pytest.raises(PublishError) as failure:
        run.diff(second)
    message = str(failure.value)
    assert "failed: KMSAccessDenied: User is not authorized to use the key. 0 of 10 messages were published" in message
    assert f"Snapshot {second}: 10 of 24 change events are published" in message
    assert "the differ may publish to it (sns:Publish, and kms:GenerateDataKey and kms:Decrypt" in message
    assert not any(key.endswith("done.json") for key in all_keys(prefix=published_marker_prefix(second)))

    outage.over = True
    assert run.diff(second)["published_messages"] == 15
    assert change_types(run.published_once()) == EACH_ONCE


def test_a_failed_summary_publish_is_retried_without_republishing_the_events(pipeline, monkeypatch):
    run = pipeline(Fleet.generate(30, seed=30))
    first, second = two_snapshots(run)
    outage = Outage()
    flaky_sns(monkeypatch, raise_on=lambda call: call == 4 and not outage.over)  # batches 1-3, then the summary
    with pytest.raises(PublishError, match=f"Snapshot {second}: 24 of 24 change events are published"):
        run.diff(second)
    outage.over = True
    assert run.diff(second)["published_messages"] == 1
    assert change_types(run.published_once()) == EACH_ONCE


# --- the Lambda's time running out --------------------------------------------------------------------------

def test_the_collector_stops_before_the_lambdas_time_runs_out_on_a_hanging_api(pipeline, capsys):
    run = pipeline(Fleet.generate(20, seed=31))
    run.sim.faults.delay(r"/details$", seconds=4.0, times=None)  # answers, but too late
    with pytest.raises(DeadlineExceeded) as failure:
        run.collect(FakeLambdaContext(remaining_ms=47_000))  # 2 s once the write margin is kept back
    message = str(failure.value)
    assert "The run stopped before the Lambda's time ran out while the Kandji API kept failing" in message
    assert "ReadTimeout talking to 127.0.0.1" in message and NOTHING_COMMITTED in message
    assert snapshot_keys() == []
    assert '"CollectionFailed"' in capsys.readouterr().out


class ShrinkingContext(FakeLambdaContext):
    """A Lambda context whose remaining time drops to `low_ms` after `calls` readings."""

    def __init__(self, calls: int, low_ms: int = 5_000):
        super().__init__()
        self._calls = calls
        self._low_ms = low_ms

    def get_remaining_time_in_millis(self) -> int:
        self._calls -= 1
        return self.remaining_ms if self._calls >= 0 else self._low_ms


def test_the_differ_stops_between_batches_when_time_runs_out_and_its_retry_publishes_the_rest(pipeline):
    run = pipeline(Fleet.generate(30, seed=32))
    first, second = two_snapshots(run)
    # The comparison reads the remaining time every 16 devices; then there is time for two batches of 10.
    devices = {row["device_id"] for snapshot_id in (first, second)
               for row in read_rows(the_manifest({"snapshot_id": snapshot_id})["tables"]["devices"]["keys"])}
    with pytest.raises(DeadlineExceeded) as failure:
        run.diff(second, ShrinkingContext(calls=len(devices) // 16 + 2))
    message = str(failure.value)
    assert f"The differ stopped before the Lambda's time ran out: 20 of 24 change events of snapshot {second} " \
           "are published" in message
    assert "Nothing was published twice" in message and "publishes only the rest" in message
    assert len(run.received()) == 20

    assert run.diff(second)["published_messages"] == 5
    assert change_types(run.published_once()) == EACH_ONCE


# --- the differ's trigger: twice, late, for a snapshot that cannot be read ----------------------------------

def test_redelivered_and_late_triggers_publish_nothing_twice(pipeline):
    run = pipeline(Fleet.generate(40, seed=33))
    first = run.collect()["snapshot_id"]
    run.fleet.apply_demo_changes()
    second = run.collect()["snapshot_id"]
    run.fleet.apply_demo_changes()
    third = run.collect()["snapshot_id"]

    run.diff(first)
    newest = run.diff(third)  # the trigger for the second snapshot is late
    assert newest["previous_snapshot_id"] == second and newest["events"] > 0
    late = run.diff(second)  # older than a snapshot already diffed: against ITS predecessor
    assert late["previous_snapshot_id"] == first and late["events"] > 0 and not late["already_done"]
    for snapshot_id in (third, second, first, second):  # delivered again, in any order
        again = run.diff(snapshot_id)
        assert again["already_done"] and again["published_messages"] == 0

    messages = run.published_once()
    assert len(messages) == newest["events"] + late["events"] + 3
    by_snapshot = Counter((message["snapshot_id"], message["previous_snapshot_id"]) for message in messages)
    assert by_snapshot == {(first, None): 1, (third, second): newest["events"] + 1,
                           (second, first): late["events"] + 1}
    assert change_types(messages)["device_removed"] == 2  # one per apply_demo_changes, none from the faults


@pytest.mark.parametrize("which", ["current", "previous"])
def test_a_committed_snapshot_whose_parts_are_missing_fails_clearly_and_publishes_nothing(pipeline, which):
    run = pipeline(Fleet.generate(20, seed=34))
    first = run.collect()["snapshot_id"]
    run.fleet.apply_demo_changes()
    second = run.collect()["snapshot_id"]
    owner = second if which == "current" else first
    [missing] = the_manifest({"snapshot_id": owner})["tables"]["device_apps"]["keys"]
    boto3.client("s3").delete_object(Bucket=BUCKET, Key=missing)

    with pytest.raises(SnapshotIncomplete) as failure:
        run.diff(second)
    message = str(failure.value)
    assert f"Snapshot {second} cannot be diffed: s3://{BUCKET}/{missing} is listed in the manifest of snapshot " \
           f"{owner} but does not exist" in message
    assert "Nothing was published." in message and f"invoke the differ again for {second}" in message
    assert run.received() == []
    # No changes file, no progress markers; only the claim on the previous snapshot (and this snapshot's
    # choice), kept for the retry: a snapshot that finds it taken counts on this one to cover its changes.
    assert all_keys(prefix="changes/") == [f"changes/_published/{second}/previous.json",
                                           f"changes/_transitions/{first}.json"]


@pytest.mark.parametrize("damage", ["newer_schema", "cut_short"])
def test_an_unreadable_latest_manifest_blocks_no_run(pipeline, damage, caplog, capsys):
    """Issue 19.7. The latest manifest was written by a newer version, or cut short: the next collector
    runs commit (reading from the snapshot before it) and their diffs publish, with a warning naming it."""
    run = pipeline(Fleet.generate(12, seed=35))
    first = run.collect()["snapshot_id"]
    bad = run.collect()["snapshot_id"]
    run.diff(first), run.diff(bad)  # `bad` holds the claim on `first`
    s3 = boto3.client("s3")
    body = s3.get_object(Bucket=BUCKET, Key=manifest_key(bad))["Body"].read()
    damaged = body[: len(body) // 2] if damage == "cut_short" else \
        json.dumps({**json.loads(body), "schema_version": 2}).encode()
    s3.put_object(Bucket=BUCKET, Key=manifest_key(bad), Body=damaged)
    run.fleet.apply_demo_changes()
    third = run.collect()["snapshot_id"]
    assert the_manifest({"snapshot_id": third})["previous_snapshot_id"] == first
    assert run.collect()["snapshot_id"] > third  # and every run after it
    run.received()  # what the earlier diffs published
    assert run.diff(third)["previous_snapshot_id"] == first
    assert set(change_types(run.received())) - {"snapshot_summary"}  # the demo changes, published
    logged = capsys.readouterr().out + caplog.text  # the handlers' JSON log lines, or the records
    assert f"snapshot {bad} is passed over: {manifest_key(bad)} is not a kandji-snapshots manifest" in logged


# --- collector bugs that need a change in collector.py (documented here, fixed there) ------------------------

class _FailAfter:
    """A KandjiApi whose device_apps raises after `calls` calls (the fleet otherwise served by the simulator)."""

    def __init__(self, api, calls: int):
        self._api = api
        self._left = calls
        self.host = api.host

    def list_devices(self):
        return self._api.list_devices()

    def device_details(self, device_id):
        return self._api.device_details(device_id)

    def iter_prism_category(self, category):
        return self._api.iter_prism_category(category)

    def device_apps(self, device_id):
        self._left -= 1
        if self._left < 0:
            raise KandjiApiError("simulated failure", endpoint="apps")
        return self._api.device_apps(device_id)


def test_a_failed_run_with_the_snapshot_id_of_a_committed_one_leaves_that_snapshot_intact():
    from differ_fixtures import FakeFleet
    from kandji_fakes import StepClock

    store = MemoryObjectStore()
    fleet = FakeFleet.of(12)
    start = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    settings = CollectorSettings(max_workers=2, rows_per_part=3)
    committed = SnapshotCollector(fleet, store, clock=StepClock(start), settings=settings).collect()
    with pytest.raises(KandjiApiError):  # it takes the next second's id, then fails: only its own parts go
        SnapshotCollector(_FailAfter(fleet, 9), store, clock=StepClock(start), settings=settings,
                          sleep=lambda seconds: None).collect()
    keys = [key for table in ("devices", "device_details", "device_apps") for key in committed.table_keys(table)]
    assert [key for key in keys if key not in store.objects] == []


class _ManifestWrittenButReportedFailed(MemoryObjectStore):
    """S3 stored the manifest, but the client saw an error (a reset after the upload, a timeout)."""

    def put(self, key, body, **options):
        super().put(key, body, **options)
        if key.startswith("snapshots/manifests/"):
            raise SnapshotWriteError(f"Writing {key} failed (RequestTimeout). Nothing was committed.")


def test_a_manifest_write_that_fails_ambiguously_does_not_leave_a_manifest_without_its_parts():
    from differ_fixtures import FakeFleet
    from kandji_fakes import StepClock

    store = _ManifestWrittenButReportedFailed()
    # The manifest is stored after all: the snapshot is committed, and the run says so.
    manifest = SnapshotCollector(FakeFleet.of(3), store,
                                 clock=StepClock(datetime(2026, 11, 23, 10, tzinfo=timezone.utc))).collect()
    assert manifest.document["device_count"] == 3
    manifest_keys = [key for key in store.objects if key.startswith("snapshots/manifests/")]
    parts = [key for key in store.objects if not key.startswith("snapshots/manifests/")]
    assert manifest_keys == [] or parts != []  # either not committed, or committed with its parts
