"""KandjiClient against the simulator on 127.0.0.1: the guards and headers no other test reaches.

The rate limiter runs on a fake clock, so a pause is read as a number, not waited out.
"""

from __future__ import annotations

from email.utils import formatdate
from types import SimpleNamespace

import pytest

from kandji_snapshots.errors import KandjiApiError
from kandji_snapshots.kandji import client as client_module
from kandji_snapshots.kandji.client import KandjiClient, rate_limit_wait
from kandji_snapshots.kandji.config import KandjiCredentials, validate_api_url
from kandji_snapshots.kandji.rate_limiter import RateLimiter
from simulator import Fleet, KandjiSimulator

TOKEN = "kst-client-0a1b2c3d4e-unit-token"


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def sim():
    with KandjiSimulator(Fleet.generate(20, seed=2), token=TOKEN) as simulator:
        yield simulator


@pytest.fixture
def fake_time():
    return FakeTime()


NOW = 1_795_000_000.0  # a whole second, so an HTTP date (whole seconds) is exactly so many seconds away


@pytest.fixture
def stopped_wall_clock(monkeypatch) -> float:
    """The client's wall clock, read only to turn an HTTP-date Retry-After into seconds, stopped at NOW."""
    monkeypatch.setattr(client_module, "time", SimpleNamespace(time=lambda: NOW))
    return NOW


@pytest.fixture
def limiter(fake_time):
    return RateLimiter(1000, clock=fake_time.clock, sleep=fake_time.sleep)


@pytest.fixture
def client(sim, fake_time, limiter):
    credentials = KandjiCredentials(validate_api_url(sim.base_url, allow_insecure_localhost=True), TOKEN)
    return KandjiClient(credentials, limiter=limiter, clock=fake_time.clock, sleep=fake_time.sleep)


def test_a_prism_cursor_that_repeats_stops_the_paging(sim, client):
    sim.faults.fail(r"/prism/apps$", status=200, times=None,
                    body={"data": [{"device_id": "d1", "app_name": "Safari"}], "cursor": "c-again"})
    rows = []
    with pytest.raises(KandjiApiError, match="served a page it had served before"):
        for row in client.prism_apps():
            rows.append(row)
            assert len(rows) <= 10, "the paging went on after the cursor repeated"
    assert len(rows) == 1 and sim.stats.by_endpoint["prism_apps"] == 2  # the repeated page is not read again


def test_a_prism_cursor_handed_out_twice_stops_the_paging_even_when_the_rows_differ(sim, client):
    def page(row, cursor):
        return {"offset": None, "limit": 300, "total": 10, "data": [{"device_id": row}], "cursor": cursor}

    sim.faults.fail(r"offset=0", status=200, times=None, body=page("d1", "c1"))
    sim.faults.fail(r"cursor=c1", status=200, times=None, body=page("d2", "c2"))
    sim.faults.fail(r"cursor=c2", status=200, times=None, body=page("d3", "c1"))  # back to c1: a loop
    with pytest.raises(KandjiApiError, match="returned a cursor it had returned before: Prism's paging is looping"):
        list(client.prism_apps())
    assert sim.stats.by_endpoint["prism_apps"] == 3


def test_prism_apps_running_out_of_rows_before_the_total_fail_the_read(sim, client):
    total = sim.fleet.prism_app_total()
    # Pages of 100 that overlap by 2: offsets 0, 98, 196, 294 (after 296 rows read).
    sim.faults.fail(r"/prism/apps\?.*offset=294$", status=200,  # once: the page asked for again would be whole
                    body={"offset": 294, "limit": 300, "total": total, "data": [], "cursor": None})
    assert total > 400
    with pytest.raises(KandjiApiError, match=f"GET /api/v1/prism/apps ran out of rows after 296 of the {total} "):
        list(client.prism_apps())


def test_prism_paging_follows_the_cursor_to_the_end(sim, client):
    rows = list(client.prism_apps())
    assert len(rows) == sim.fleet.prism_app_total() > 300  # more than one page
    assert sim.stats.by_endpoint["prism_apps"] >= 2


def test_an_exhausted_per_second_window_pauses_every_worker_for_a_second(sim, client, limiter, fake_time):
    device_id = client.list_devices()[0]["device_id"]
    assert limiter.paused_until == 0.0  # the simulator sends no per-second headers by default
    fake_time.now = 5.0
    sim.faults.fail(r"/details$", status=200, body={"general": {}}, headers={"x-ratelimit-remaining-second": "0"})
    client.device_details(device_id)
    assert limiter.paused_until == pytest.approx(6.0)
    sim.faults.fail(r"/details$", status=200, body={"general": {}}, headers={"x-ratelimit-remaining-second": "3"})
    client.device_details(device_id)
    assert limiter.paused_until == pytest.approx(6.0)  # budget left: no new pause


def test_a_429_with_an_http_date_retry_after_waits_until_that_date(sim, client, limiter, stopped_wall_clock):
    sim.faults.fail(r"/devices$", status=429, body={"message": "API rate limit exceeded"},
                    headers={"Retry-After": formatdate(stopped_wall_clock + 600, usegmt=True), "ratelimit-reset": "7"})
    devices = client.list_devices()
    assert len(devices) == 20 and client.stats.rate_limited == 1
    # The date, not the 7 s of ratelimit-reset: ten minutes from now (the limiter's clock started at 0).
    assert limiter.paused_until == 600


def test_retry_after_forms(stopped_wall_clock):
    future = formatdate(stopped_wall_clock + 600, usegmt=True)
    assert rate_limit_wait({"Retry-After": "12"}) == 12.0
    assert rate_limit_wait({"Retry-After": future, "ratelimit-reset": "7"}) == 600.0
    assert rate_limit_wait({"Retry-After": formatdate(stopped_wall_clock - 60, usegmt=True)}) == 0.0  # already past
    assert rate_limit_wait({"Retry-After": "soon", "ratelimit-reset": "7"}) == 7.0  # unreadable: the reset
    assert rate_limit_wait({"Retry-After": "99999"}) == 3600.0  # capped at an hour
    assert rate_limit_wait({}) is None
