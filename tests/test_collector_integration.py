"""The collector handler end to end: the simulator over HTTP on 127.0.0.1, S3 and Secrets Manager from moto."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from aws_helpers import BUCKET, all_keys, create_bucket, create_secret, manifests, read_rows
from conftest import load_handler
from kandji_fakes import FakeClock, run_handler_on

from kandji_snapshots.collect import runtime as collector_runtime
from kandji_snapshots.errors import (
    ConfigurationError,
    DeadlineExceeded,
    KandjiAuthError,
    KandjiSnapshotsError,
    RateLimitExhausted,
)
from kandji_snapshots.kandji.paging import DeviceListPaginator, PrismPaginator
from kandji_snapshots.kandji.rate_limiter import RateLimiter
from simulator import Fleet, KandjiSimulator
from simulator import server as simulator_server

TOKEN = "kst-9f8e7d6c5b4a-integration-token"
EVENT = json.loads((Path(__file__).parent.parent / "events" / "scheduler_event.json").read_text())


@pytest.fixture
def pipeline(aws, monkeypatch):
    """Returns a function that starts a simulator for a fleet and points the collector at it."""
    started = []

    def start(fleet: Fleet, *, secret: dict | str | None = None, env: dict | None = None, **simulator_options):
        sim = KandjiSimulator(fleet, token=TOKEN, **simulator_options).start()
        started.append(sim)
        create_bucket()
        value = secret if secret is not None else {"api_url": sim.api_url, "api_token": TOKEN}
        arn = create_secret(value if isinstance(value, str) else json.dumps(value))
        for name, setting in {"KANDJI_SECRET_ID": arn, "SNAPSHOT_BUCKET": BUCKET,
                              "KANDJI_ALLOW_INSECURE_LOCALHOST": "true",
                              "KANDJI_MAX_REQUESTS_PER_SECOND": "1000", **(env or {})}.items():
            monkeypatch.setenv(name, setting)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def shared_clock(monkeypatch) -> FakeClock:
    """One fake clock for the collector's run and the simulators the test starts: the simulator counts each
    second's requests on the time the collector paces itself by, so what arrives in a second, and so whether
    it answers 429, does not depend on how busy the machine is."""
    clock = FakeClock()
    monkeypatch.setattr(simulator_server, "time", clock)
    return clock


def run_collector(lambda_context):
    return load_handler("collector").lambda_handler(EVENT, lambda_context)


APP_IDENTITY = ("device_id", "bundle_id", "path", "version", "app_name", "app_id")


def app_identities(rows) -> list[tuple]:
    return sorted(tuple(row[name] or "" for name in APP_IDENTITY) for row in rows)


def served_apps(fleet: Fleet, device_id: str) -> list[tuple]:
    """The identity of each app as the simulator serves it (app_id may be a number there)."""
    def served(value):  # Kandji's "No value" is no value
        return "" if value in (None, "No value") else str(value)
    return sorted((device_id, *(served(app.get(name)) for name in APP_IDENTITY[1:])) for app in fleet.apps(device_id))


def test_snapshot_of_a_fleet_listed_in_several_pages_is_complete_and_faithful(pipeline, lambda_context):
    # Two pages of the device list (300 a page, overlapping by one): the client's paging of any number of
    # pages is test_list_pages.py's and test_paging.py's; this is the handler's whole run over HTTP.
    fleet = Fleet.generate(320, seed=11)
    sim = pipeline(fleet)
    result = run_collector(lambda_context)

    [manifest] = manifests()
    assert result["snapshot_id"] == manifest["snapshot_id"] and result["devices"] == 320
    assert manifest["correlation_id"] == EVENT["scheduled_time"]
    assert manifest["api_host"] == sim.api_url.split("//")[1].split("/")[0]
    assert sim.stats.by_endpoint["devices"] == DeviceListPaginator.requests_for(320) == 2  # more than one page
    devices = read_rows(manifest["tables"]["devices"]["keys"])
    details = read_rows(manifest["tables"]["device_details"]["keys"])
    apps = read_rows(manifest["tables"]["device_apps"]["keys"])
    ids = fleet.device_ids()
    assert [row["device_id"] for row in devices] == sorted(ids)  # each once, sorted
    assert [row["device_id"] for row in details] == sorted(ids)
    assert {row["platform"] for row in devices} == {"Mac", "iPhone", "iPad", "AppleTV", "Windows", "Android"}
    assert manifest["tables"]["device_apps"]["rows"] == len(apps) == sum(fleet.app_count(i) for i in ids)
    served = sorted(entry for device_id in ids for entry in served_apps(fleet, device_id))
    written = app_identities(apps)
    assert written == served
    # Each row is its own device's (every value, exactly: test_a_device_is_written_exactly_as_served).
    by_id = {row["device_id"]: row for row in devices}
    details_by_id = {row["device_id"]: row for row in details}
    for device_id in ids[::11]:
        item, raw_details = fleet.list_item(device_id), fleet.details(device_id)
        assert [by_id[device_id][name] for name in ("serial_number", "device_name", "platform", "model")] == [
            item.get("serial_number"), item.get("device_name"), item.get("platform"), item.get("model")]
        assert details_by_id[device_id]["general"]["device_name"] == raw_details["general"]["device_name"]
    assert manifest["requests"]["total"] == sim.stats.requests
    assert manifest["skipped_devices"] == []


# One device's details and apps, pinned to payloads written here, in the forms Kandji sends them.
PINNED_DETAILS = {
    "general": {"device_id": "PINNED", "device_name": "Ann's MacBook Air", "platform": "Mac", "os_version": "15.1.1",
                "last_user": "ann", "assigned_user": "", "first_enrollment": "2024-03-01 08:15:00.123456+00:00"},
    "mdm": {"mdm_enabled": "True", "supervised": "False", "last_check_in": "2026-11-23 09:58:07 +0000"},
    "filevault": {"filevault_enabled": True, "filevault_prk_escrowed": "Yes"},
    "lost_mode": {"lost_mode_status": "", "last_location": {"latitude": "52.5200", "longitude": "13.4050"}},
    "volumes": [{"name": "Macintosh HD", "format": "APFS", "percent_used": "41%", "capacity": "494.38 GB",
                 "available": "291.2 GB", "encrypted": "Yes"}],
    "users": {"regular_users": [{"username": "ann", "uid": "501"}]},
    "battery_cycles": 87,  # a field the schema does not know
}
PINNED_APPS = {"apps": [
    {"app_name": "zoom.us", "bundle_id": "us.zoom.xos", "path": "/Applications/zoom.us.app", "version": "6.0.2",
     "app_id": 412, "source": "Kandji", "creation_date": "2024-05-01T10:00:00Z", "app_store_vendable": "false"},
    {"app_name": "Zed Legacy Tool", "path": "/Applications/Zed Legacy Tool.app", "version": "1.0"},  # no bundle_id
    {"app_name": "Safari", "bundle_id": "com.apple.Safari", "path": "/Applications/Safari.app", "version": "18.1",
     "signature": ["Apple"], "device_based_vpp": "maybe"},  # a list for a string, an unreadable boolean
]}


def test_a_device_is_written_exactly_as_served(pipeline, lambda_context):
    fleet = Fleet.generate(3, seed=1)
    sim = pipeline(fleet)
    device_id = fleet.device_ids()[1]
    sim.faults.fail(rf"/devices/{device_id}/details$", status=200, body=PINNED_DETAILS, times=None)
    sim.faults.fail(rf"/devices/{device_id}/apps$", status=200, body=PINNED_APPS, times=None)
    run_collector(lambda_context)
    [manifest] = manifests()
    snapshot_id = manifest["snapshot_id"]
    [details] = [row for row in read_rows(manifest["tables"]["device_details"]["keys"])
                 if row["device_id"] == device_id]
    fetched_at = details["fetched_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", fetched_at)
    assert details == {
        "snapshot_id": snapshot_id, "device_id": device_id, "fetched_at": fetched_at,
        "general": {"device_id": "PINNED", "device_name": "Ann's MacBook Air", "model": None, "platform": "Mac",
                    "os_version": "15.1.1", "system_version": None, "supplemental_build_version": None,
                    "supplemental_os_version_extra": None, "boot_volume": None, "time_since_boot": None,
                    "last_user": "ann", "asset_tag": None, "assigned_user": None, "blueprint_name": None,
                    "blueprint_uuid": None, "first_enrollment": "2024-03-01T08:15:00.123456Z",
                    "last_enrollment": None},
        "mdm": {"mdm_enabled": True, "supervised": False, "install_date": None,
                "last_check_in": "2026-11-23T09:58:07.000000Z", "mdm_enabled_user": None},
        "activation_lock": None,
        "filevault": {"filevault_enabled": True, "filevault_recoverykey_type": None, "filevault_prk_escrowed": True,
                      "filevault_next_rotation": None, "filevault_regen_required": None},
        "lost_mode": {"lost_mode_status": None, "enabled_by": None, "enable_status_at": None, "disable_status": None,
                      "disabled_by": None, "disable_status_at": None, "lock_screen_message": None,
                      "lock_screen_phone_number": None, "lock_screen_footnote": None, "last_location_status": None,
                      "last_location_status_at": None, "last_location": {"latitude": 52.52, "longitude": 13.405},
                      "last_location_at": None, "sound_status": None, "sound_status_at": None},
        "automated_device_enrollment": None, "kandji_agent": None, "hardware_overview": None,
        "volumes": [{"name": "Macintosh HD", "format": "APFS", "identifier": None, "percent_used": "41%",
                     "capacity": "494.38 GB", "available": "291.2 GB", "encrypted": True}],
        "network": None, "recovery_information": None,
        "users": '{"regular_users":[{"uid":"501","username":"ann"}]}',
        "installed_profiles": None, "apple_business_manager": None, "security_information": None, "cellular": None,
        "tags": None,
        "extra": '{"battery_cycles":87}',
    }
    apps = [row for row in read_rows(manifest["tables"]["device_apps"]["keys"]) if row["device_id"] == device_id]
    empty = {"bundle_size": None, "app_store_vendable": None, "device_based_vpp": None, "source": None,
             "process": None, "signature": None, "creation_date": None, "modification_date": None, "extra": None}
    key = {"snapshot_id": snapshot_id, "device_id": device_id}
    assert [row["fetched_at"] for row in apps] == [apps[0]["fetched_at"]] * 3
    assert [{name: value for name, value in row.items() if name != "fetched_at"} for row in apps] == [
        # in identity order: no bundle id first, then by bundle id
        {**key, **empty, "app_id": None, "app_name": "Zed Legacy Tool", "bundle_id": None,
         "path": "/Applications/Zed Legacy Tool.app", "version": "1.0"},
        {**key, **empty, "app_id": None, "app_name": "Safari", "bundle_id": "com.apple.Safari",
         "path": "/Applications/Safari.app", "version": "18.1", "signature": '["Apple"]',  # as JSON text
         "extra": '{"device_based_vpp":"maybe"}'},  # kept verbatim, not lost
        {**key, **empty, "app_id": "412", "app_name": "zoom.us", "bundle_id": "us.zoom.xos",
         "app_store_vendable": False, "source": "Kandji", "creation_date": "2024-05-01T10:00:00.000000Z",
         "path": "/Applications/zoom.us.app", "version": "6.0.2"},
    ]


def test_rate_limits_and_server_errors_lose_no_device(pipeline, lambda_context):
    fleet = Fleet.generate(150, seed=3)
    sim = pipeline(fleet)
    devices = fleet.device_ids()
    sim.faults.rate_limit_burst(times=4, retry_after=1)
    # Each fault bound to a device, fewer times than a request's 8 attempts: faults on any request could all
    # land on one device's retries when the machine is busy, failing the run by chance.
    for device_id in devices[:5]:
        sim.faults.fail(rf"/devices/{device_id}/details$", status=503, times=2)
        sim.faults.fail(rf"/devices/{device_id}/apps$", status=500, times=1)
    sim.faults.fail(r"/devices$", status=502, times=2)
    for device_id in devices[5:8]:
        sim.faults.reset_connection(rf"/devices/{device_id}/apps$", times=1)
    run_collector(lambda_context)
    [manifest] = manifests()
    assert manifest["device_count"] == 150 and manifest["skipped_devices"] == []
    assert manifest["requests"]["rate_limited"] >= 4 and manifest["requests"]["retries"] >= 24
    apps = read_rows(manifest["tables"]["device_apps"]["keys"])
    assert len(apps) == sum(fleet.app_count(i) for i in fleet.device_ids())


def test_device_unenrolled_mid_run_is_skipped_and_recorded(pipeline, lambda_context):
    fleet = Fleet.generate(40, seed=5)
    sim = pipeline(fleet)
    gone = fleet.device_ids()[7]
    sim.faults.unenroll_during_run(gone)
    run_collector(lambda_context)
    [manifest] = manifests()
    assert [item["device_id"] for item in manifest["skipped_devices"]] == [gone]
    assert gone not in {row["device_id"] for row in read_rows(manifest["tables"]["devices"]["keys"])}


def test_wrong_token_fails_clearly_and_commits_nothing(pipeline, lambda_context):
    sim = pipeline(Fleet.generate(30, seed=1))
    sim.token = "the-token-kandji-knows"  # the secret still holds TOKEN: Kandji no longer accepts it
    with pytest.raises(KandjiAuthError, match="401 Unauthorized: the API token is wrong, revoked or expired"):
        run_collector(lambda_context)
    assert sim.stats.status_counts[401] >= 1
    assert all_keys() == []  # not a part, not a manifest


def test_a_secret_without_an_api_url_fails_clearly_and_commits_nothing(pipeline, lambda_context):
    sim = pipeline(Fleet.generate(30, seed=1), secret={"api_url": "", "api_token": TOKEN},
                   env={"KANDJI_API_URL": ""})
    with pytest.raises(ConfigurationError, match="No Kandji API URL"):
        run_collector(lambda_context)
    assert sim.stats.requests == 0 and all_keys() == []


def test_revoked_token_fails_with_401_message_and_no_manifest(pipeline, lambda_context):
    sim = pipeline(Fleet.generate(200, seed=2))
    sim.faults.revoke_token_after(120)
    with pytest.raises(KandjiAuthError, match="401 Unauthorized: the API token is wrong, revoked or expired, "
                                              "or it lacks the permission GET /devices") as error:
        run_collector(lambda_context)
    assert "Kandji answers 401 for both" in str(error.value)
    assert all_keys(prefix="snapshots/") == []  # no manifest, and the parts written were removed


def test_a_token_without_any_permission_gets_401_and_the_message_names_both_causes(pipeline, lambda_context):
    pipeline(Fleet.generate(20, seed=2), permissions=set())
    with pytest.raises(KandjiAuthError, match="401 Unauthorized: the API token is wrong, revoked or expired, or it "
                                              r"lacks the permission GET /devices \(Device list\)"):
        run_collector(lambda_context)
    assert all_keys(prefix="snapshots/") == []


@pytest.mark.parametrize("era", ["2022", "2023", "2024"])
def test_responses_of_every_header_era_give_a_complete_snapshot(pipeline, lambda_context, shared_clock, era):
    """2022: no rate-limit headers, x-total-count and `link: <None>`; 2023: Kong's via; 2024: the set."""
    fleet = Fleet.generate(60, seed=3)  # 120 requests and more: over 50 in the fake clock's first second
    sim = pipeline(fleet, headers_era=era, rate_limit_per_second=50)
    run_handler_on(shared_clock, EVENT, lambda_context)  # 1000/s asked of a 50/s tenant: 429s, with or without headers
    [manifest] = manifests()
    assert manifest["device_count"] == 60 and manifest["tables"]["device_details"]["rows"] == 60
    assert sim.stats.by_endpoint.get("secrets", 0) == 0  # never asked for a secret
    if era != "2024":  # nothing but a 429 tells these eras' client that the second's 50 are spent
        assert sim.stats.rate_limited > 0


def test_missing_permission_names_the_endpoint(pipeline, lambda_context):
    pipeline(Fleet.generate(20, seed=2), permissions={"devices", "details"})
    with pytest.raises(KandjiAuthError, match=r"403 Forbidden: the API token lacks the permission "
                                              r"GET /devices/\{device_id\}/apps .*, or the token is wrong "
                                              r"or revoked"):
        run_collector(lambda_context)
    assert all_keys(prefix="snapshots/") == []


@pytest.mark.parametrize("url", ["https://acme.kandji.io", "http://127.0.0.1:1/api/v2/", "https://evil.example"])
def test_bad_url_fails_before_any_request(pipeline, lambda_context, url):
    sim = pipeline(Fleet.generate(5, seed=1), secret={"api_url": url, "api_token": TOKEN})
    with pytest.raises(ConfigurationError, match="Expected https://<tenant>.api.kandji.io"):
        run_collector(lambda_context)
    assert sim.stats.requests == 0 and all_keys(prefix="snapshots/") == []


def test_url_from_environment_with_a_bare_token(pipeline, lambda_context, monkeypatch):
    sim = pipeline(Fleet.generate(10, seed=1), secret=f"  {TOKEN}\n")
    monkeypatch.setenv("KANDJI_API_URL", sim.base_url)  # the root form, no /api/v1/
    assert run_collector(lambda_context)["devices"] == 10


def test_api_outage_stops_before_the_lambda_times_out_and_commits_nothing(pipeline, lambda_context):
    sim = pipeline(Fleet.generate(20, seed=1))
    sim.faults.fail(r"/details$", status=503, times=None)  # down for good
    lambda_context.remaining_ms = 52_000  # 7 s left once the write margin is kept back
    clock = FakeClock()  # the back-off waits pass on it at once
    with pytest.raises(DeadlineExceeded, match="503 from the Kandji API") as failure:
        run_handler_on(clock, EVENT, lambda_context)
    assert "before the Lambda's time ran out" in str(failure.value)
    assert 0 < clock.elapsed <= 7.0  # it gave up at the deadline, not after it
    # It did retry before giving up: a device's details were asked for again (how many devices were
    # reached before the deadline depends on how the machine schedules the workers).
    details_paths = Counter(path for _, _, path, _, _ in sim.stats.request_log if path.endswith("/details"))
    assert max(details_paths.values()) > 1
    assert all_keys(prefix="snapshots/") == []


def recorded_starts(monkeypatch) -> list[float]:
    """The start time the collector's rate limiter grants each request, on the limiter's own clock."""
    starts: list[float] = []

    class RecordingLimiter(RateLimiter):
        def acquire(self, deadline: float | None = None) -> float:
            start = super().acquire(deadline)
            starts.append(start)
            return start

    monkeypatch.setattr(collector_runtime, "RateLimiter", RecordingLimiter)
    return starts


def test_limiter_keeps_under_the_api_limit_so_no_429(pipeline, lambda_context, monkeypatch, shared_clock):
    # Half the API's limit. Both sides on one clock: the simulator counts arrivals on the time the limiter spaces
    # them by (the workers may still bunch their few in-flight requests, never 30 more).
    sim = pipeline(Fleet.generate(60, seed=4), rate_limit_per_second=60)
    monkeypatch.setenv("KANDJI_MAX_REQUESTS_PER_SECOND", "30")
    starts = recorded_starts(monkeypatch)
    run_handler_on(shared_clock, EVENT, lambda_context)
    assert sim.stats.rate_limited == 0
    assert sim.stats.max_requests_in_any_second <= 60
    assert manifests()[0]["device_count"] == 60
    # The setting reached the limiter: every request waited for its slot, 1/30 s after the previous one.
    starts = sorted(starts)  # granted in order, recorded as each worker got back
    assert len(starts) == sim.stats.requests
    assert min(later - earlier for earlier, later in zip(starts, starts[1:])) >= 1 / 30


# Prism has no app_id, bundle size or VPP columns; its other columns map onto the per-device ones.
PER_DEVICE_ONLY = ("app_id", "bundle_size", "app_store_vendable", "device_based_vpp", "extra")


def shared_columns(rows):
    return [{k: v for k, v in row.items() if k not in ("fetched_at", "snapshot_id", *PER_DEVICE_ONLY)}
            for row in rows]


@pytest.mark.parametrize("simulator_options", [
    {"prism_page_rows": 25},  # as recorded: short pages, null cursor, total larger
    {"prism_cursors": True},  # the vendor's newer script pages by cursor
], ids=["offset-null-cursor", "cursor"])
def test_prism_apps_give_the_same_rows_as_per_device(pipeline, lambda_context, monkeypatch, simulator_options):
    fleet = Fleet.generate(40, seed=8)  # some 800 app rows: dozens of Prism pages
    sim = pipeline(fleet, env={"KANDJI_APPS_SOURCE": "prism"}, **simulator_options)
    run_collector(lambda_context)
    [manifest] = manifests()
    assert manifest["apps_source"] == "prism"
    assert sim.stats.by_endpoint.get("apps", 0) == 0
    total = sum(fleet.app_count(i) for i in fleet.device_ids())
    if "prism_page_rows" in simulator_options:
        assert sim.stats.by_endpoint["prism_apps"] == PrismPaginator.requests_for(total, 25)  # short pages, overlapping
    prism_rows = read_rows(manifest["tables"]["device_apps"]["keys"])
    # The same fleet collected per device, into another bucket: the rows must not tell the two apart.
    create_bucket("per-device-snapshots")
    monkeypatch.setenv("SNAPSHOT_BUCKET", "per-device-snapshots")
    monkeypatch.setenv("KANDJI_APPS_SOURCE", "per-device")
    run_collector(lambda_context)
    [per_device] = manifests("per-device-snapshots")
    assert per_device["apps_source"] == "per-device"
    per_device_rows = read_rows(per_device["tables"]["device_apps"]["keys"], "per-device-snapshots")
    assert len(prism_rows) == len(per_device_rows) == total
    assert shared_columns(prism_rows) == shared_columns(per_device_rows)  # column for column
    assert all(row[column] for row in prism_rows[:50] for column in ("app_name", "creation_date"))
    assert all(row["app_id"] is None for row in prism_rows)
    # Prism's device columns belong to the devices table, not to the app rows' extra.
    extras = [json.loads(row["extra"]) for row in prism_rows if row["extra"]]
    assert not any(key.startswith("device__") or key in ("serial_number", "blueprint_name")
                   for extra in extras for key in extra)


def test_a_prism_server_repeating_itself_fails_the_run_and_commits_nothing(pipeline, lambda_context):
    sim = pipeline(Fleet.generate(60, seed=8), env={"KANDJI_APPS_SOURCE": "prism"}, prism_page_rows=25)
    sim.faults.repeat_prism_page()
    with pytest.raises(KandjiSnapshotsError, match="served a page it had served before"):
        run_collector(lambda_context)
    assert sim.stats.by_endpoint["prism_apps"] == 2
    assert all_keys(prefix="snapshots/") == []


def test_auto_falls_back_to_per_device_when_prism_is_not_allowed(pipeline, lambda_context):
    fleet = Fleet.generate(30, seed=8)
    sim = pipeline(fleet, env={"KANDJI_APPS_SOURCE": "auto"}, permissions={"devices", "details", "apps"})
    run_collector(lambda_context)
    [manifest] = manifests()
    assert manifest["apps_source"] == "per-device"
    assert sim.stats.by_endpoint["apps"] == 30


def test_the_token_appears_in_no_log_line_error_or_object(pipeline, lambda_context, capsys, caplog):
    sim = pipeline(Fleet.generate(60, seed=9), env={"POWERTOOLS_LOG_LEVEL": "DEBUG", "LOG_LEVEL": "DEBUG"})
    sim.faults.rate_limit_burst(times=3, retry_after=1)
    sim.faults.fail(r"/details$", status=500, times=3)
    run_collector(lambda_context)
    sim.faults.revoke_token_after(10)
    with pytest.raises(KandjiAuthError) as failure:
        run_collector(lambda_context)
    output = capsys.readouterr()
    logged = output.out + output.err + caplog.text
    assert "snapshot committed" in logged  # the logs were captured
    assert TOKEN not in logged and TOKEN not in str(failure.value)
    from aws_helpers import read_object
    for key in all_keys():
        assert TOKEN.encode() not in read_object(key)
    assert sim.stats.tokens_seen == {f"Bearer {TOKEN}"}


def emitted_metrics(output: str) -> dict:
    """The EMF metrics the handler printed: name -> value."""
    values = {}
    for line in output.splitlines():
        if line.startswith('{"_aws"'):
            document = json.loads(line)
            for definition in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                values[definition["Name"]] = document[definition["Name"]]
    return values


def test_failures_are_classified_in_metrics_for_the_alarms(pipeline, lambda_context, capsys):
    sim = pipeline(Fleet.generate(20, seed=1))
    run_collector(lambda_context)
    assert emitted_metrics(capsys.readouterr().out)["SnapshotsCommitted"] == [1.0]
    sim.faults.revoke_token_after(0)
    with pytest.raises(KandjiAuthError):
        run_collector(lambda_context)
    failed = emitted_metrics(capsys.readouterr().out)
    assert failed["CollectionFailed"] == [1.0] and failed["AuthenticationFailed"] == [1.0]
    assert "SnapshotsCommitted" not in failed
    sim.faults.restore_token()
    sim.faults.rate_limit_burst(times=None, retry_after=10)  # the tenant's budget is gone
    lambda_context.remaining_ms = 50_000
    with pytest.raises(RateLimitExhausted, match="429|rate limit"):
        run_collector(lambda_context)
    failed = emitted_metrics(capsys.readouterr().out)
    assert failed["RateLimitExhausted"] == [1.0] and "AuthenticationFailed" not in failed
