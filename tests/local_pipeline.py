"""The real pipeline on a simulated fleet, into a local folder: the collector (SnapshotCollector + KandjiClient +
RateLimiter) against the Kandji simulator over HTTP, then the differ. What test_schema_guard.py checks against the
template's tables and test_local_queries.py queries with DuckDB."""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kandji_snapshots.collect.runtime import build_collector
from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.diff.publisher import MemoryPublisher
from kandji_snapshots.kandji.config import parse_secret, validate_api_url
from kandji_snapshots.settings import CollectorSettings
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.storage import LocalObjectStore
from simulator import Fleet, KandjiSimulator

TOKEN = "schema-guard-test-token"


def collect_with_simulator(sim: KandjiSimulator, store: LocalObjectStore, at: datetime,
                           options: CollectorSettings = CollectorSettings(hourly_reserve=0),
                           temp_dir: str | None = None) -> Manifest:
    """One snapshot, built by collect.runtime.build_collector as everywhere, against the simulator and a folder,
    starting at `at`."""
    assert validate_api_url(sim.api_url, allow_insecure_localhost=True).api_root == sim.api_url
    credentials = parse_secret(json.dumps({"api_url": sim.api_url, "api_token": sim.token}), fallback_url=None,
                               allow_insecure_localhost=True)
    clock = SimpleNamespace(monotonic=time.monotonic, sleep=time.sleep, now=lambda: at)
    run = build_collector(credentials, store, replace(options, requests_per_second=500), clock=clock,
                          temp_dir=temp_dir)
    return run.collector.collect()


@dataclass
class Pipeline:
    root: Path
    fleet: Fleet
    first: Manifest
    second: Manifest
    demo: dict[str, Any]  # what Fleet.apply_demo_changes changed
    stale: dict[str, datetime]  # device_id -> last check-in of devices enrolled long ago and silent since
    agent_removed: str  # a Mac whose agent was uninstalled between the snapshots
    now: datetime


def run_pipeline(root: Path, *, count: int = 40, seed: int = 11) -> Pipeline:
    """Snapshot, mutate the fleet, snapshot again, diff both: what a day of the real service leaves behind."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    fleet = Fleet.generate(count, seed=seed)
    fleet.clock = lambda: now - timedelta(minutes=90)
    store = LocalObjectStore(root)
    with KandjiSimulator(fleet, token=TOKEN, rate_limit_per_hour=None) as sim:
        first = collect_with_simulator(sim, store, now - timedelta(hours=2))
        demo = fleet.apply_demo_changes(at=now - timedelta(minutes=90))
        agent_removed = next(d for d in fleet.device_ids()
                             if fleet.platform(d) == "Mac" and fleet.list_item(d)["agent_installed"]
                             and d not in {demo["enrolled"]["device_id"], demo["filevault_disabled"]["device_id"]})
        fleet.set_agent_installed(agent_removed, False)
        touched = {demo[key]["device_id"] for key in ("removed", "os_updated", "enrolled")}
        fleet.set_lost_mode(next(d for d in fleet.device_ids()  # lost mode on a new platform
                                 if fleet.platform(d) == "Android" and d not in touched), True)
        stale = {}
        for platform, days in (("Mac", 30), ("iPad", 20), ("iPhone", 10)):
            at = now - timedelta(days=days)
            stale[fleet.enroll(platform, at=at)] = at
        second = collect_with_simulator(sim, store, now - timedelta(hours=1))
    publisher = MemoryPublisher()
    for manifest in (first, second):
        SnapshotDiffer(store, publisher).run(manifest.snapshot_id)
    stale = {device_id: at for device_id, at in stale.items() if at < now - timedelta(days=14)}
    return Pipeline(root, fleet, first, second, demo, stale, agent_removed, now)


def change_events(root: Path) -> list[dict[str, Any]]:
    """Every change event the differ wrote under `root`, in file order."""
    events = []
    for path in sorted((root / "changes").glob("dt=*/*.json.gz")):
        events += [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines() if line.strip()]
    return events
