"""The Kandji API simulator, exercised over real HTTP with `requests`."""
from __future__ import annotations

import concurrent.futures
import copy
import json
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from datetime import datetime, timezone

import pytest
import requests

from simulator import Faults, Fleet, KandjiSimulator
from simulator import server as simulator_server

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fleet1000() -> Fleet:
    return Fleet.generate(1000, seed=7)


@pytest.fixture(scope="module")
def sim1000(fleet1000):
    """Read-only shared simulator: tests using it must not add faults or mutate the fleet."""
    with KandjiSimulator(fleet1000, token=TOKEN) as sim:
        yield sim


class ServerClock:
    """simulator.server's `time`, replaced: clocks that move only when told, and a sleep that returns at
    once or, with `barrier` set, waits for the other requests (they must be in the server together)."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.25  # a quarter into a wall-clock second
        self.mono = time.monotonic()
        self.barrier: threading.Barrier | None = None

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        if self.barrier is not None:
            self.barrier.wait()

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def server_clock(monkeypatch) -> ServerClock:
    clock = ServerClock()
    monkeypatch.setattr(simulator_server, "time", clock)
    return clock


@pytest.fixture
def small():
    """A fresh small fleet + simulator per test, free to mutate and to inject faults into."""
    fleet = Fleet.generate(40, seed=11, apps_per_device=(3, 8))
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        yield fleet, sim


@pytest.fixture
def session():
    with requests.Session() as s:
        s.headers.update(AUTH)
        yield s


def get(sim: KandjiSimulator, path: str, session: requests.Session | None = None, **kwargs):
    kwargs.setdefault("timeout", 60)  # a hang guard only: a busy machine may be slow to answer
    return (session or requests).get(sim.api_url + path, headers=None if session else AUTH, **kwargs)


def is_html_404(response: requests.Response) -> bool:
    return (response.status_code == 404 and response.headers["Content-Type"].startswith("text/html")
            and response.text.lower().startswith("<!doctype html>") and "Not Found" in response.text)


# ---------------------------------------------------------------------------- /devices paging
def test_device_paging_caps_at_300_and_covers_the_fleet_once(sim1000, fleet1000, session):
    pages, offset = [], 0
    while True:
        page = get(sim1000, "devices", session, params={"limit": 1000, "offset": offset,
                                                        "ordering": "serial_number"}).json()
        assert isinstance(page, list)
        if not page:
            break
        pages.append(page)
        offset += len(page)
    assert [len(p) for p in pages] == [300, 300, 300, 100]
    ids = [d["device_id"] for p in pages for d in p]
    assert len(set(ids)) == 1000
    serials = [d["serial_number"] for p in pages for d in p]
    assert serials == sorted(serials)
    assert sorted(ids) == fleet1000.device_ids()
    # Served items are exactly the fleet's list items.
    served = sorted((d for p in pages for d in p), key=lambda d: d["device_id"])
    assert served == fleet1000.list_items()


def test_device_paging_default_order_reverse_ordering_and_past_the_end(sim1000, fleet1000, session):
    first = get(sim1000, "devices", session).json()
    assert len(first) == 300  # default limit
    assert [d["device_id"] for d in first] == fleet1000.device_ids(ordering=None)[:300]
    by_id = get(sim1000, "devices", session, params={"ordering": "-device_id", "limit": 5}).json()
    assert [d["device_id"] for d in by_id] == sorted(fleet1000.device_ids(), reverse=True)[:5]
    past = get(sim1000, "devices", session, params={"offset": 1000})
    assert past.status_code == 200 and past.json() == []
    # Trailing slash and the bare base URL both work.
    assert requests.get(sim1000.base_url + "/api/v1/devices/", headers=AUTH, params={"limit": 2}).json() == first[:2]


def test_device_list_filters_and_invalid_limit(sim1000, fleet1000, session):
    tvs = get(sim1000, "devices", session, params={"platform": "AppleTV"}).json()
    assert tvs and all(d["platform"] == "AppleTV" for d in tvs)
    assert len(tvs) == sum(1 for d in fleet1000.list_items() if d["platform"] == "AppleTV")
    one = fleet1000.list_items()[17]
    found = get(sim1000, "devices", session, params={"serial_number": one["serial_number"]}).json()
    assert found == [one]
    bad = get(sim1000, "devices", session, params={"limit": "lots"})
    assert bad.status_code == 400 and bad.json() == {"limit": ["A valid integer is required."]}
    assert get(sim1000, "devices", session, params={"offset": "-1"}).status_code == 400


def test_empty_fleet_answers_empty_list():
    with KandjiSimulator(Fleet.generate(0), token=TOKEN) as sim:
        r = get(sim, "devices")
        assert r.status_code == 200 and r.json() == []


# ---------------------------------------------------------------------------- errors, auth, permissions
def test_unknown_devices_and_paths_answer_html_404(sim1000, session):
    assert is_html_404(get(sim1000, "devices/not-a-device/details", session))
    assert is_html_404(get(sim1000, "devices/00000000-0000-4000-8000-000000000000/apps", session))
    assert is_html_404(get(sim1000, "nothing/here", session))
    assert is_html_404(requests.get(sim1000.base_url + "/devices", headers=AUTH))


def test_auth_401_and_tokens_seen(fleet1000):
    with KandjiSimulator(fleet1000, token=TOKEN) as sim:
        missing = requests.get(sim.api_url + "devices")
        wrong = requests.get(sim.api_url + "devices", headers={"Authorization": "Bearer nope"})
        for r in (missing, wrong):
            assert r.status_code == 401
            assert r.headers["Content-Type"] == "application/json"
            assert r.json() == {"detail": "Invalid token."}
        assert get(sim, "devices", params={"limit": 1}).status_code == 200
        assert sim.tokens_seen == {"Bearer nope", f"Bearer {TOKEN}"}
        sim.reset_stats()
        assert sim.tokens_seen == set()


def test_permissions_403_and_method_405(fleet1000):
    device_id = fleet1000.device_ids()[0]
    with KandjiSimulator(fleet1000, token=TOKEN, permissions={"devices", "details"}) as sim:
        assert get(sim, "devices", params={"limit": 1}).status_code == 200
        assert get(sim, f"devices/{device_id}/details").status_code == 200
        for path in (f"devices/{device_id}/apps", "prism/apps", "prism/count?category=apps"):
            r = get(sim, path)
            assert r.status_code == 403
            assert r.json() == {"detail": "You do not have permission to perform this action."}
        r = requests.post(sim.api_url + "devices", headers=AUTH, json={"x": 1})
        assert r.status_code == 405
        assert get(sim, "devices", params={"limit": 1}).status_code == 200  # connection still sane
        # Secrets (FileVault key, bypass code, ...) are never granted here: 403, and counted.
        assert get(sim, f"devices/{device_id}/secrets/filevaultkey").status_code == 403
        assert sim.stats.by_endpoint["secrets"] == 1


def test_a_token_stripped_of_every_permission_answers_401(fleet1000):
    with KandjiSimulator(fleet1000, token=TOKEN, permissions=set()) as sim:
        r = get(sim, "devices", params={"limit": 1})
        assert r.status_code == 401 and r.json() == {"detail": "Invalid token."}


# ---------------------------------------------------------------------------- rate limiting
RATE_HEADERS = ("x-ratelimit-limit-hour", "x-ratelimit-remaining-hour", "x-ratelimit-limit-second",
                "x-ratelimit-remaining-second", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


def test_per_second_rate_limit_answers_429_with_headers(server_clock, small, session):
    fleet, sim = small
    sim.rate_limit_per_second = 5
    responses = [get(sim, "devices", session, params={"limit": 1}) for _ in range(20)]  # all in one second
    assert [r.status_code for r in responses] == [200] * 5 + [429] * 15
    assert [r.headers["x-ratelimit-remaining-second"] for r in responses[:6]] == ["4", "3", "2", "1", "0", "0"]
    for r in responses:
        assert all(h in r.headers for h in RATE_HEADERS)
    r = responses[5]
    assert r.json() == {"message": "API rate limit exceeded"}
    assert r.headers["Retry-After"] == "1"  # 0.75 s to the next second, rounded up
    server_clock.advance(0.7)  # still the same second
    assert get(sim, "devices", session, params={"limit": 1}).status_code == 429
    server_clock.advance(0.1)  # the next second: a fresh window
    fresh = [get(sim, "devices", session, params={"limit": 1}) for _ in range(5)]
    assert [r.status_code for r in fresh] == [200] * 5
    assert fresh[0].headers["x-ratelimit-remaining-second"] == "4"
    # Counted once each response is sent: the requests since on this connection make the count final.
    assert sim.stats.rate_limited == 16
    assert get(sim, "devices", session, params={"limit": 1}).status_code == 429


def test_hourly_budget_shared_with_other_integrations(small, session):
    fleet, sim = small
    sim.rate_limit_per_hour = 100
    sim.hour_used = 97  # other integrations already spent most of the hour
    remaining = [get(sim, "devices", session, params={"limit": 1}).headers["x-ratelimit-remaining-hour"]
                 for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    r = get(sim, "devices", session, params={"limit": 1})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 1
    assert "x-ratelimit-limit-second" not in r.headers  # no per-second limit configured
    assert sim.hour_remaining == 0


def test_rate_limit_headers_can_be_switched_off(fleet1000):
    with KandjiSimulator(fleet1000, token=TOKEN, send_rate_limit_headers=False,
                         rate_limit_per_second=50) as sim:
        r = get(sim, "devices", params={"limit": 1})
        assert r.status_code == 200 and not any(h in r.headers for h in RATE_HEADERS)


# ---------------------------------------------------------------------------- faults
def test_fault_fail_bursts_and_custom_bodies(small, session):
    fleet, sim = small
    assert isinstance(sim.faults, Faults)
    sim.faults.fail(r"/devices$", status=503, times=2)
    sim.faults.fail(r"/details", status=400, body='"bad request"')
    statuses = [get(sim, "devices", session, params={"limit": 1}).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    r = get(sim, f"devices/{fleet.device_ids()[0]}/details", session)
    assert r.status_code == 400 and r.json() == "bad request"
    sim.faults.fail(r"offset=3\b", status=500, body={"detail": "boom"}, headers={"X-Trace": "1"})
    r = get(sim, "devices", session, params={"limit": 3, "offset": 3})
    assert r.status_code == 500 and r.json() == {"detail": "boom"} and r.headers["X-Trace"] == "1"
    assert sim.faults.pending() == 0


def test_fault_rate_limit_burst(small, session):
    fleet, sim = small
    sim.faults.rate_limit_burst(2, retry_after=3, reset=4)
    sim.faults.rate_limit_burst(1, retry_after=None)
    first, second, third, fourth = (get(sim, "devices", session, params={"limit": 1}) for _ in range(4))
    assert first.status_code == second.status_code == third.status_code == 429
    assert first.headers["Retry-After"] == "3" and first.headers["ratelimit-reset"] == "4"
    assert "Retry-After" not in third.headers and "ratelimit-reset" not in third.headers
    assert fourth.status_code == 200
    assert sim.stats.rate_limited == 3


def test_fault_revoke_token_after(small, session):
    fleet, sim = small
    sim.faults.revoke_token_after(2)
    statuses = [get(sim, "devices", session, params={"limit": 1}).status_code for _ in range(4)]
    assert statuses == [200, 200, 401, 401]


def test_fault_unenroll_during_run(small, session):
    fleet, sim = small
    gone = fleet.device_ids()[3]
    sim.faults.unenroll_during_run(gone)
    listed = [d["device_id"] for d in get(sim, "devices", session).json()]
    assert gone in listed
    assert is_html_404(get(sim, f"devices/{gone}/details", session))
    assert is_html_404(get(sim, f"devices/{gone}/apps", session))


@pytest.mark.parametrize("kind", ["truncated", "not_json", "html"])
def test_fault_malformed_bodies(small, session, kind):
    fleet, sim = small
    sim.faults.malformed(r"/devices$", kind=kind)
    r = get(sim, "devices", session)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    if kind == "html":
        assert r.headers["Content-Type"].startswith("text/html")
    assert isinstance(get(sim, "devices", session).json(), list)  # consumed


def test_fault_malformed_incomplete_body(small, session):
    fleet, sim = small
    sim.faults.malformed(r"/devices$", kind="incomplete")
    with pytest.raises(requests.exceptions.RequestException):
        get(sim, "devices", session)
    assert get(sim, "devices", session).status_code == 200


def test_fault_repeat_page(small, session):
    fleet, sim = small
    sim.faults.repeat_page()
    page1 = get(sim, "devices", session, params={"limit": 10}).json()
    page2 = get(sim, "devices", session, params={"limit": 10, "offset": 10}).json()
    page2_again = get(sim, "devices", session, params={"limit": 10, "offset": 10}).json()
    assert page2 == page1
    assert page2_again != page1 and len(page2_again) == 10


def test_fault_reset_connection(small, session):
    fleet, sim = small
    sim.faults.reset_connection(r"/apps$")
    device_id = fleet.device_ids()[0]
    with pytest.raises(requests.ConnectionError):
        get(sim, f"devices/{device_id}/apps", session)
    assert get(sim, f"devices/{device_id}/apps", session).status_code == 200
    assert sim.stats.status_counts[0] == 1


def test_fault_delay_causes_read_timeout(small, session):
    fleet, sim = small
    sim.faults.delay(r"/devices$", seconds=0.6)
    with pytest.raises(requests.ReadTimeout):
        get(sim, "devices", session, timeout=0.2)
    assert get(sim, "devices", session).status_code == 200


# ---------------------------------------------------------------------------- determinism, scale
def test_same_seed_same_fleet_other_seed_other_fleet():
    a, b, c = (Fleet.generate(60, seed=s) for s in (5, 5, 6))
    assert a.list_items() == b.list_items()
    for device_id in a.device_ids()[:10]:
        assert a.details(device_id) == b.details(device_id)
        assert a.apps(device_id) == b.apps(device_id)
        assert a.details(device_id) == a.details(device_id)  # lazy, but stable per call
    assert a.device_ids() != c.device_ids()


def test_large_fleet_is_lazy():
    fleet = Fleet.generate(5_000, seed=3, apps_per_device=(30, 50))
    assert len(fleet) == 5_000
    assert all(dev.apps is None for dev in fleet._devices.values())  # nothing materialised
    assert fleet.prism_app_total() > 5_000 * 15
    # Memory: a few KB per device, where materialised apps would cost tens of KB each.
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        small = Fleet.generate(500, seed=4, apps_per_device=(30, 50))
        per_device = (tracemalloc.get_traced_memory()[0] - before) / len(small)
    finally:
        tracemalloc.stop()
    assert per_device < 8_000


# ---------------------------------------------------------------------------- quirks
TS_PATTERNS = {
    "iso_us_z": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$",
    "space_us_offset": r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00$",
    "space_offset": r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00$",
    "space_0000": r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000$",
    "iso_z": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$",
}


def _ts_kind(value):
    return next((k for k, p in TS_PATTERNS.items() if re.match(p, value or "")), None)


def test_list_quirks(sim1000, fleet1000, session):
    items = [d for offset in range(0, 1000, 300)
             for d in get(sim1000, "devices", session, params={"offset": offset}).json()]
    assert {d["platform"] for d in items} == {"Mac", "iPhone", "iPad", "AppleTV", "Windows", "Android"}
    macs = sum(d["platform"] == "Mac" for d in items)
    assert 400 <= macs <= 600
    windows = [d for d in items if d["platform"] == "Windows" and "supplemental_build_version" in d]
    assert windows and all(re.match(r"^10\.0\.\d{5}$", d["os_version"]) for d in windows)
    assert all(re.match(r"^\d{5}\.\d+$", d["supplemental_build_version"]) for d in windows)
    agents = {d["agent_version"] for d in items if d["agent_installed"]}
    assert agents and all(re.match(r"^\d+\.\d+\.\d+ \(\d+\)$", v) for v in agents)  # "3.7.2 (2834)"
    assert any(d["user"] == "" for d in items)
    users = [d["user"] for d in items if d["user"]]
    assert all(set(u) == {"email", "name", "id", "is_archived"} for u in users)
    assert any(isinstance(u["id"], int) for u in users) and any(isinstance(u["id"], str) for u in users)
    old = [d for d in items if "tags" not in d]
    assert old and all("lost_mode_status" not in d and "supplemental_build_version" not in d for d in old)
    for d in items:
        for key in ("mdm_enabled", "agent_installed", "is_missing", "is_removed"):
            assert isinstance(d[key], bool)
    kinds = {_ts_kind(d["last_check_in"]) for d in items}
    assert kinds == set(TS_PATTERNS)
    firsts = [d["first_enrollment"] for d in items]
    assert "" in firsts and None in firsts
    assert all(_ts_kind(v) for v in firsts if v)


def test_detail_quirks_per_platform(sim1000, fleet1000, session):
    by_platform: dict[str, list[str]] = {}
    for item in fleet1000.list_items():
        by_platform.setdefault(item["platform"], []).append(item["device_id"])
    mac_details = [get(sim1000, f"devices/{i}/details", session).json() for i in by_platform["Mac"][:40]]
    assert all(d == fleet1000.details(d["general"]["device_id"]) for d in mac_details)
    for d in mac_details:
        assert d["mdm"]["mdm_enabled"] in ("True", "False")
        assert d["kandji_agent"]["agent_installed"] in ("True", "False")
        assert d["filevault"]["filevault_enabled"] in (True, False)
        assert {v["encrypted"] for v in d["volumes"]} <= {"Yes", "No", ""}
        assert re.match(r"^\d+%$", d["volumes"][0]["percent_used"])
        # Both APFS volumes of the boot container; the sealed system volume is never encrypted.
        assert d["volumes"][0] | {"percent_used": "", "available": "", "capacity": ""} == {
            "name": "Macintosh HD", "format": "APFS", "encrypted": "No", "identifier": "disk1s5s1",
            "percent_used": "", "available": "", "capacity": ""}
        data = d["volumes"][1]
        assert data["name"] == "Macintosh HD - Data" and data["identifier"]
        assert (data["format"], data["encrypted"]) == (
            ("APFS (Encrypted)", "Yes") if d["filevault"]["filevault_enabled"] else ("APFS", "No"))
        assert isinstance(d["mdm"]["mdm_enabled_user"], list)
        assert set(d["filevault"]) >= {"filevault_next_rotation", "filevault_regen_required"}
        assert set(d["recovery_information"]) >= {"recovery_lock_enabled", "firmware_password_exist",
                                                  "firmware_password_pending", "password_rotation_scheduled",
                                                  "password_escrowed"}
        assert set(d["activation_lock"]) == {"bypass_code_failed", "user_activation_lock_enabled",
                                             "device_activation_lock_enabled", "activation_lock_supported",
                                             "activation_lock_allowed_while_supervised"}
        assert all(isinstance(v, bool) for v in d["activation_lock"].values())
        assert all(isinstance(v, bool) for v in d["automated_device_enrollment"].values())
        assert d.get("security_information", {}) in ({}, {"remote_desktop_enabled": False},
                                                      {"remote_desktop_enabled": True})
        assert 95 <= len(d["users"]["system_users"]) <= 105
        assert {"username": "_lp", "uid": "26", "path": "/var/spool/cups", "name": "Lp", "admin": "No"} in \
            d["users"]["system_users"]
        assert re.match(r"^\d+\.\d+\.\d+ \(\d+\)$", d["kandji_agent"]["agent_version"]) or \
            d["kandji_agent"]["agent_installed"] == "False"
        assert d["volumes"][0]["capacity"].endswith(" GB")
        assert re.match(r"^\d+ (minutes?|hours?|days?|weeks?|months?) ago$", d["general"]["time_since_boot"])
        assert {u["admin"] for u in d["users"]["regular_users"]} <= {"Yes", "No"}
        assert d["hardware_overview"]["number_of_processors"].isdigit()
    assert {d["filevault"]["filevault_enabled"] for d in mac_details} == {True, False}
    sizes = sorted(len(json.dumps(d)) for d in mac_details)
    assert 9_000 <= sizes[len(sizes) // 2] <= 15_000  # a real Mac's details are about 11 KB
    assert any(d["mdm"]["mdm_enabled_user"] for d in mac_details)
    assert any(d["recovery_information"]["recovery_lock_enabled"] for d in mac_details)
    abm = [d["apple_business_manager"] for d in mac_details if d["apple_business_manager"]]
    assert abm and set(abm[0]) == {"model", "color", "description", "serial_number", "device_family", "os",
                                   "device_assigned_by", "device_assigned_date"}
    assert any(d["general"]["assigned_user"] == "" for d in mac_details) or any(
        fleet1000.details(i)["general"]["assigned_user"] == "" for i in by_platform["Mac"])

    ipad = get(sim1000, f"devices/{by_platform['iPad'][0]}/details", session).json()
    assert set(ipad["hardware_overview"]) == {"uuid", "serial_number", "model_identifier"}
    assert ipad["filevault"]["filevault_enabled"] is None
    assert "users" not in ipad and "recovery_information" not in ipad
    assert [v["name"] for v in ipad["volumes"]] == [""]  # iPad volumes come without a name
    assert set(ipad["cellular"]) == {"voice_roaming", "data_roaming", "cellular_technology", "subscriptions"}
    assert isinstance(ipad["cellular"]["cellular_technology"], int)
    tv = get(sim1000, f"devices/{by_platform['AppleTV'][0]}/details", session).json()
    assert tv["network"] == {} and tv["volumes"] == [] and "lost_mode" not in tv
    assert "filevault" not in tv and tv["kandji_agent"] == {}
    lost = [fleet1000.details(i)["lost_mode"] for i in by_platform["iPhone"] + by_platform["iPad"]]
    filled = [x for x in lost if x]
    assert filled and {} in lost
    for section in filled:
        assert set(section) == {
            "lost_mode_status", "enabled_by", "enable_status_at", "disable_status", "disabled_by",
            "disable_status_at", "lock_screen_message", "lock_screen_phone_number", "lock_screen_footnote",
            "last_location_status", "last_location_status_at", "last_location", "last_location_at",
            "sound_status", "sound_status_at"}
        assert section["lost_mode_status"] == "ENABLED" and section["disable_status_at"] == ""
        assert {type(v) for v in section["last_location"].values()} == {str}
    for platform in ("Windows", "Android"):
        other = get(sim1000, f"devices/{by_platform[platform][0]}/details", session).json()
        assert other["general"]["platform"] == platform
        assert all(other[s] == {} for s in ("activation_lock", "kandji_agent", "network"))
        assert "users" not in other and "recovery_information" not in other


def test_app_quirks(sim1000, fleet1000, session):
    ids = fleet1000.device_ids()
    platform = {d["device_id"]: d["platform"] for d in fleet1000.list_items()}
    mac_ids = [i for i in ids if platform[i] == "Mac"]
    served = get(sim1000, f"devices/{mac_ids[0]}/apps", session).json()
    assert served == {"device_id": mac_ids[0], "apps": fleet1000.apps(mac_ids[0])}

    mac_apps = {i: fleet1000.apps(i) for i in mac_ids}
    assert 20 <= sum(map(len, mac_apps.values())) / len(mac_apps) <= 40
    for apps in list(mac_apps.values())[:100]:
        for app in apps:
            assert all(isinstance(v, str) for v in app.values())
            assert app["app_id"].isdigit()
    assert any(a.get("bundle_id") == "" for apps in mac_apps.values() for a in apps)
    assert any("bundle_id" not in a for apps in mac_apps.values() for a in apps)
    duplicated = []
    for apps in mac_apps.values():
        chrome = [a for a in apps if a.get("bundle_id") == "com.google.Chrome"]
        if len(chrome) == 2:
            duplicated.append(chrome)
    assert duplicated
    assert all(a["path"] != b["path"] and a["version"] != b["version"] for a, b in duplicated)

    ios_apps = [a for i in ids if platform[i] in ("iPhone", "iPad") for a in fleet1000.apps(i)]
    assert ios_apps and not any(a.get("bundle_id", "").startswith("com.apple.mobile") for a in ios_apps)
    for device_id in mac_ids[:20]:  # sequential row ids; one inventory time for every app
        apps = fleet1000.apps(device_id)
        assert [int(a["app_id"]) for a in apps] == list(range(int(apps[0]["app_id"]),
                                                              int(apps[0]["app_id"]) + len(apps)))
        assert len({(a["creation_date"], a["modification_date"]) for a in apps}) == 1
    assert any(a["version"] == "No value" for apps in mac_apps.values() for a in apps)
    assert not any(a["source"] == "Apple" for a in ios_apps)
    tv_counts = [len(fleet1000.apps(i)) for i in ids if platform[i] == "AppleTV"]
    assert max(tv_counts) <= 3


# ---------------------------------------------------------------------------- prism
def test_prism_pages_are_short_with_a_null_cursor_while_total_is_larger(session):
    fleet = Fleet.generate(120, seed=9, apps_per_device=(5, 12))
    with KandjiSimulator(fleet, token=TOKEN, prism_page_rows=25) as sim:
        total = get(sim, "prism/count", session, params={"category": "apps"}).json()
        first = get(sim, "prism/apps", session).json()
        assert set(first) == {"offset", "limit", "total", "data", "cursor"}
        # The recorded real page: 25 rows, a null cursor and a null offset, while total is larger.
        assert (first["offset"], first["limit"], len(first["data"]), first["cursor"]) == (None, 25, 25, None)
        assert first["total"] == total["count"] > 25
        rows, offset = [], 0
        while offset < first["total"]:  # offset paging until `total` rows are read
            body = get(sim, "prism/apps", session, params={"limit": 300, "offset": offset}).json()
            assert body["cursor"] is None and body["offset"] == offset and len(body["data"]) <= 25
            rows.extend(body["data"])
            offset += len(body["data"])
        assert len(rows) == total["count"] and rows == list(fleet.prism_app_rows())
        past = get(sim, "prism/apps", session, params={"offset": len(rows)}).json()
        assert past["data"] == [] and past["cursor"] is None


def test_prism_rows_have_their_own_column_names_and_match_the_per_device_apps(session):
    fleet = Fleet.generate(120, seed=9, apps_per_device=(5, 12))
    with KandjiSimulator(fleet, token=TOKEN, prism_cursors=True) as sim:
        rows, params = [], {"limit": 1000}
        while True:  # this tenant hands out cursors
            body = get(sim, "prism/apps", session, params=params).json()
            rows.extend(body["data"])
            if not body["cursor"]:
                break
            params = {"limit": 1000, "cursor": body["cursor"]}
        assert len(rows) == body["total"]
        row = rows[0]
        for key in ("device__name", "device__family", "device__user_email", "name", "short_version",
                    "obtained_from", "bundle_name", "executable", "created_at", "updated_at", "last_collected_at"):
            assert key in row
        for key in ("app_id", "app_name", "source", "process", "creation_date", "device_name"):
            assert not any(key in r for r in rows)
        assert any(v is None for v in row.values())  # many null keys
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00$", row["created_at"])
        rebuilt: dict[str, list[dict]] = {}
        for row in rows:
            rebuilt.setdefault(row["device_id"], []).append(row)
        for device_id in fleet.device_ids():
            apps = get(sim, f"devices/{device_id}/apps", session).json()["apps"]
            got = rebuilt.get(device_id, [])
            assert [(r["name"], r["bundle_id"], r["version"], r["path"], r["obtained_from"]) for r in got] == [
                (a["app_name"], a.get("bundle_id") or None, None if a["version"] == "No value" else a["version"],
                 a["path"] or None, a["source"] or None) for a in apps]
        assert get(sim, "prism/apps", session, params={"cursor": "garbage!"}).status_code == 400


def test_a_prism_server_repeating_itself(small, session):
    fleet, sim = small
    sim.faults.repeat_prism_page()
    first = get(sim, "prism/apps", session, params={"offset": 0}).json()["data"]
    assert get(sim, "prism/apps", session, params={"offset": len(first)}).json()["data"] == first
    sim.faults.clear()


@pytest.mark.parametrize("era, present, absent", [
    ("2022", {"x-total-count", "link"}, {"ratelimit-limit", "x-ratelimit-remaining-hour", "via"}),
    ("2023", {"via"}, {"ratelimit-limit", "x-ratelimit-remaining-hour", "x-total-count"}),
    ("2024", {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "x-ratelimit-limit-hour",
              "x-ratelimit-remaining-hour"}, {"via", "x-total-count"}),
])
def test_response_headers_of_each_era(fleet1000, session, era, present, absent):
    with KandjiSimulator(fleet1000, token=TOKEN, headers_era=era, rate_limit_per_second=50) as sim:
        response = get(sim, "devices", session, params={"limit": 5})
    headers = {name.lower() for name in response.headers}
    assert present <= headers and not absent & headers
    if era == "2022":
        assert response.headers["link"] == '<None>; rel="next"'
        assert response.headers["x-total-count"] == str(len(fleet1000))
    if era == "2023":
        assert response.headers["via"] == "kong/2.7.2"


# ---------------------------------------------------------------------------- mutations
def test_mutations_are_visible_through_the_api(small, session):
    fleet, sim = small
    ids = fleet.device_ids()
    macs = [i for i in ids if fleet.platform(i) == "Mac"]
    new_id = fleet.enroll("iPhone")
    assert new_id in [d["device_id"] for d in get(sim, "devices", session).json()]
    assert get(sim, f"devices/{new_id}/details", session).json()["general"]["platform"] == "iPhone"

    removed = ids[0]
    fleet.remove(removed)
    assert removed not in [d["device_id"] for d in get(sim, "devices", session).json()]
    assert is_html_404(get(sim, f"devices/{removed}/details", session))

    mac = macs[1]
    fleet.update_os(mac, "15.0")
    listed = get(sim, "devices", session, params={"device_id": mac}).json()[0]
    details = get(sim, f"devices/{mac}/details", session).json()
    assert listed["os_version"] == details["general"]["os_version"] == "15.0"
    assert details["general"]["system_version"].startswith("15.0 (")

    fleet.install_app(mac, "Demo", "com.example.demo", "1.0")
    fleet.install_app(mac, "Demo", "com.example.demo", "0.9", path="/Users/x/Applications/Demo.app")
    apps = get(sim, f"devices/{mac}/apps", session).json()["apps"]
    assert sorted(a["version"] for a in apps if a.get("bundle_id") == "com.example.demo") == ["0.9", "1.0"]
    fleet.update_app(mac, "com.example.demo", "2.0", path="/Applications/Demo.app")
    fleet.remove_app(mac, "com.example.demo", path="/Users/x/Applications/Demo.app")
    apps = get(sim, f"devices/{mac}/apps", session).json()["apps"]
    assert [(a["version"], a["path"]) for a in apps if a.get("bundle_id") == "com.example.demo"] == [
        ("2.0", "/Applications/Demo.app")]
    with pytest.raises(KeyError):
        fleet.remove_app(mac, "com.example.not-there")

    fleet.set_filevault(mac, False)
    details = get(sim, f"devices/{mac}/details", session).json()
    assert details["filevault"]["filevault_enabled"] is False
    assert [(v["name"], v["format"], v["encrypted"]) for v in details["volumes"][:2]] == [
        ("Macintosh HD", "APFS", "No"), ("Macintosh HD - Data", "APFS", "No")]
    fleet.set_agent_installed(mac, False)
    fleet.set_mdm_enabled(mac, False)
    fleet.set_missing(mac, True)
    fleet.rename(mac, "Renamed Mac")
    listed = get(sim, "devices", session, params={"device_id": mac}).json()[0]
    assert (listed["agent_installed"], listed["agent_version"], listed["mdm_enabled"], listed["is_missing"],
            listed["device_name"]) == (False, "", False, True, "Renamed Mac")
    details = get(sim, f"devices/{mac}/details", session).json()
    assert details["kandji_agent"]["agent_installed"] == "False"
    assert details["mdm"]["mdm_enabled"] == "False"
    assert details["general"]["device_name"] == "Renamed Mac"

    assert fleet.set_detail(mac, "recovery_information", "recovery_lock_enabled", False) is not None
    assert get(sim, f"devices/{mac}/details", session).json()["recovery_information"][
        "recovery_lock_enabled"] is False

    fleet.set_lost_mode(new_id, True)
    lost = get(sim, f"devices/{new_id}/details", session).json()["lost_mode"]
    assert lost["lost_mode_status"] == "ENABLED" and lost["last_location"]["latitude"]
    assert get(sim, "devices", session, params={"device_id": new_id}).json()[0]["lost_mode_status"] == "ENABLED"
    fleet.set_lost_mode(new_id, False)
    lost = get(sim, f"devices/{new_id}/details", session).json()["lost_mode"]
    assert lost["lost_mode_status"] == "DISABLED" and lost["disable_status_at"] and lost["last_location"] == {}
    assert get(sim, "devices", session, params={"device_id": new_id}).json()[0]["lost_mode_status"] == ""
    rows = get(sim, "prism/apps", session, params={"limit": 300}).json()["data"]
    assert {r["device__name"] for r in rows if r["device_id"] == mac} == {"Renamed Mac"}


VOLATILE = {
    ("general", "time_since_boot"), ("mdm", "last_check_in"), ("kandji_agent", "last_check_in"),
    # a lost device reports where it is at each check-in
    *(("lost_mode", key) for key in ("last_location_status_at", "last_location_at", "sound_status_at")),
    ("lost_mode", "last_location", "latitude"), ("lost_mode", "last_location", "longitude"),
}
INVENTORY = ("app_id", "creation_date", "modification_date")


def _diff(a, b, path=()):
    """Paths of leaf values that differ between two JSON documents."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return [p for k in a for p in _diff(a[k], b[k], path + (k,))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for x, y in zip(a, b) for p in _diff(x, y, path + ("[]",))]
    return [] if a == b else [path]


def _without_inventory_fields(apps):
    """The apps without the fields a new inventory renews (app_id, dates)."""
    return [{k: v for k, v in a.items() if k not in INVENTORY} for a in apps]


def test_check_in_all_changes_only_volatile_fields(small, session):
    fleet, sim = small
    ids = fleet.device_ids()
    before_items = {d["device_id"]: d for d in get(sim, "devices", session).json()}
    before = {i: get(sim, f"devices/{i}/details", session).json() for i in ids}
    before_apps = {i: fleet.apps(i) for i in ids}
    at = datetime(2024, 8, 1, 9, 30, 15, 123456, tzinfo=timezone.utc)
    assert fleet.check_in_all(at) == at
    after_items = {d["device_id"]: d for d in get(sim, "devices", session).json()}
    for i in ids:
        assert _diff(before_items[i], after_items[i]) == [("last_check_in",)]
        assert after_items[i]["last_check_in"].startswith("2024-08-01")
        after = get(sim, f"devices/{i}/details", session).json()
        changed = set(_diff(before[i], after))
        volume_fields = {("volumes", "[]", "available"), ("volumes", "[]", "percent_used")}
        assert changed <= VOLATILE | volume_fields
        assert ("mdm", "last_check_in") in changed
        if "time_since_boot" in after["general"]:  # not on Windows/Android
            assert ("general", "time_since_boot") in changed
        if after.get("volumes"):
            assert ("volumes", "[]", "available") in changed
        if after.get("lost_mode", {}).get("lost_mode_status") == "ENABLED":
            assert ("lost_mode", "last_location", "latitude") in changed
        assert after["mdm"]["last_check_in"].startswith("2024-08-01")
        if after["kandji_agent"].get("agent_installed") == "True":
            assert ("kandji_agent", "last_check_in") in changed
        # A new inventory: new sequential app_ids and dates, the apps themselves unchanged.
        apps = fleet.apps(i)
        assert _without_inventory_fields(apps) == _without_inventory_fields(before_apps[i])
        assert not {a["app_id"] for a in apps} & {a["app_id"] for a in before_apps[i]}


def test_apply_demo_changes_reports_what_changed(small, session):
    fleet, sim = small
    ids_before = set(fleet.device_ids())
    snapshot = {i: (fleet.list_item(i), fleet.details(i), fleet.apps(i)) for i in ids_before}
    changes = fleet.apply_demo_changes()
    ids_after = {d["device_id"] for d in get(sim, "devices", session).json()}
    assert ids_after - ids_before == {changes["enrolled"]["device_id"]}
    assert ids_before - ids_after == {changes["removed"]["device_id"]}

    os_change = changes["os_updated"]
    assert snapshot[os_change["device_id"]][0]["os_version"] == os_change["before"]
    assert get(sim, f"devices/{os_change['device_id']}/details", session).json()["general"][
        "os_version"] == os_change["after"] != os_change["before"]

    installed = changes["app_installed"]
    apps = get(sim, f"devices/{installed['device_id']}/apps", session).json()["apps"]
    assert installed["app"] in apps and len(apps) == len(snapshot[installed["device_id"]][2]) + 1

    upd = changes["app_updated"]
    apps = get(sim, f"devices/{upd['device_id']}/apps", session).json()["apps"]
    match = [a for a in apps if a.get("bundle_id") == upd["bundle_id"] and a["path"] == upd["path"]]
    assert [a["version"] for a in match] == [upd["after"]]
    old = [a for a in snapshot[upd["device_id"]][2] if a.get("bundle_id") == upd["bundle_id"]]
    assert [a["version"] for a in old] == [upd["before"]]

    fv = changes["filevault_disabled"]
    assert snapshot[fv["device_id"]][1]["filevault"]["filevault_enabled"] is True
    assert get(sim, f"devices/{fv['device_id']}/details", session).json()["filevault"]["filevault_enabled"] is False
    assert changes["checked_in"] == len(ids_after)

    # Devices nobody touched changed only in the volatile fields.
    touched = {c["device_id"] for c in (os_change, installed, upd, fv)}
    for i in sorted(ids_before - touched - {changes["removed"]["device_id"]})[:10]:
        assert set(_diff(snapshot[i][1], fleet.details(i))) <= VOLATILE | {
            ("volumes", "[]", "available"), ("volumes", "[]", "percent_used")}
        assert _without_inventory_fields(fleet.apps(i)) == _without_inventory_fields(snapshot[i][2])


# ---------------------------------------------------------------------------- server behaviour, stats
def test_keep_alive_latency_overlap_and_stats(fleet1000, server_clock):
    with KandjiSimulator(fleet1000, token=TOKEN, latency=0.2) as sim, requests.Session() as s:
        s.headers.update(AUTH)
        for _ in range(3):
            assert s.get(sim.api_url + "devices", params={"limit": 1}).status_code == 200
        assert sim.stats.connections_opened == 1  # one pooled connection reused

        # Each request's latency is a rendezvous of all eight: it completes only if the server holds the
        # eight at once (overlapped, not serialised), however slow the machine is.
        server_clock.barrier = threading.Barrier(8, timeout=30)
        ids = fleet1000.device_ids()[:8]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: requests.get(f"{sim.api_url}devices/{i}/details",
                                                         headers=AUTH, timeout=60).status_code, ids))
        assert codes == [200] * 8
        assert not server_clock.barrier.broken

        stats = sim.stats
        assert stats.requests == 11
        assert stats.by_endpoint["devices"] == 3 and stats.by_endpoint["details"] == 8
        # A request is logged before its answer is written: every answer in hand is in the log.
        assert stats.status_counts[200] == 11
        assert stats.max_requests_in_any_second >= 8
        assert len(stats.request_log) == 11
        ts, method, path, query, status = stats.request_log[0]
        assert (method, path, query, status) == ("GET", "/api/v1/devices", "limit=1", 200)
        assert stats["requests"] == 11 and stats.snapshot()["requests"] == 11
        sim.reset_stats()
        assert sim.stats.requests == 0 and sim.stats.request_log == []


def test_stop_really_stops(fleet1000):
    sim = KandjiSimulator(fleet1000, token=TOKEN).start()
    url = sim.api_url
    with requests.Session() as s:
        assert s.get(url + "devices", headers=AUTH, params={"limit": 1}).status_code == 200
        sim.stop()
        with pytest.raises(requests.ConnectionError):
            s.get(url + "devices", headers=AUTH, params={"limit": 1}, timeout=2)


def test_list_items_are_copies(fleet1000):
    items = fleet1000.list_items()
    pristine = copy.deepcopy(items[0])
    items[0]["device_name"] = "tampered"
    if isinstance(items[0]["user"], dict):
        items[0]["user"]["name"] = "tampered"
    assert fleet1000.list_items()[0] == pristine


def test_command_line_serves_until_stopped():
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--devices", "10", "--seed", "7",
                             "--token", "T", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+/api/v1/)", line).group(1)
        r = requests.get(url + "devices", headers={"Authorization": "Bearer T"}, timeout=60)
        assert r.status_code == 200 and len(r.json()) == 10
    finally:
        proc.terminate()
        proc.wait(timeout=60)
