"""collect.runtime.build_collector, the one place a collector is wired: the options reach the client and the
budget, and the run reads the injected clock (snapshot id from its `now`, deadline from its `monotonic`)."""

from __future__ import annotations

from kandji_fakes import FakeClock

from kandji_snapshots.collect.runtime import WRITE_MARGIN_SECONDS, build_collector
from kandji_snapshots.kandji.config import parse_secret
from kandji_snapshots.settings import CollectorSettings
from kandji_snapshots.snapshots.storage import MemoryObjectStore
from simulator import Fleet, KandjiSimulator

TOKEN = "kst-wiring-0b9c8d7e6f"


def test_the_options_and_the_clock_reach_the_run():
    clock = FakeClock()
    options = CollectorSettings(requests_per_second=1000, max_workers=2, request_budget=9, hourly_reserve=0)
    with KandjiSimulator(Fleet.generate(10, seed=2, apps_per_device=(0, 1)), token=TOKEN) as sim:
        credentials = parse_secret(TOKEN, fallback_url=sim.api_url, allow_insecure_localhost=True)
        run = build_collector(credentials, MemoryObjectStore(), options, clock=clock)
        manifest = run.collector.collect().document
        sent = sim.stats.requests
    assert manifest["snapshot_id"] == "20261123T090000Z"  # FakeClock's start: the wall clock is the injected one
    assert sent == manifest["requests"]["total"] <= 9  # the budget of the options, never overspent
    assert manifest["pending_devices"] > 0 and manifest["device_count"] == 10
    assert clock.elapsed > 0  # the limiter paced on the injected clock (1,000/s: a millisecond a request)


def test_the_deadline_keeps_the_write_margin_on_the_injected_clock():
    clock = FakeClock()
    clock.sleep(100.0)
    credentials = parse_secret(TOKEN, fallback_url="http://127.0.0.1:9/", allow_insecure_localhost=True)
    run = build_collector(credentials, MemoryObjectStore(), seconds_left=WRITE_MARGIN_SECONDS + 30, clock=clock)
    assert run.budget.deadline == 130.0
    assert build_collector(credentials, MemoryObjectStore()).budget.deadline is None  # the CLI: no deadline
