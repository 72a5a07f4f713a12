"""What the tenant-wide sources cost a run: requests per source, and the time to read and store them.

A fleet of `--devices` Macs whose tenant holds `--cves` CVEs detected on every fourth Mac (one detection
row per device and CVE), `--threats` threats and `--events` audit events over the backfill window. The
tenant sources are read twice, as the collector reads them before per-device details: the first run
backfills the audit trail, the second finds `--new-events` new events (an hourly run). Printed: rows and
requests per source of each run, and the seconds each took (simulator in-process, loopback, no latency).

    nice .venv/bin/python bench/tenant_sources.py [--devices 1000 --cves 40 --threats 30 --events 5000]
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone

from common import TOKEN

from kandji_snapshots.collect.tenant_sources import TenantReader
from kandji_snapshots.kandji.client import KandjiClient
from kandji_snapshots.kandji.config import parse_secret
from kandji_snapshots.kandji.rate_limiter import RateLimiter
from kandji_snapshots.snapshots.catalog import Manifest, write_manifest
from kandji_snapshots.snapshots.storage import MemoryObjectStore
from simulator import Fleet, KandjiSimulator


def one_run(sim: KandjiSimulator, store: MemoryObjectStore, snapshot_id: str, previous: Manifest | None,
            now: datetime) -> tuple[Manifest, float]:
    credentials = parse_secret(TOKEN, fallback_url=sim.api_url, allow_insecure_localhost=True)
    client = KandjiClient(credentials, limiter=RateLimiter(1000))
    reader = TenantReader(client, store, clock=lambda: now,
                          requests_spent=lambda endpoint: client.stats.as_dict()["by_endpoint"].get(endpoint, 0))
    started = time.perf_counter()
    run = reader.read(snapshot_id, previous)
    reader.commit(run, snapshot_id)
    elapsed = time.perf_counter() - started
    manifest = Manifest({"schema_version": 1, "snapshot_id": snapshot_id, "tables": {}, "tenant": run.section()})
    write_manifest(store, manifest)
    return manifest, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--cves", type=int, default=40)
    parser.add_argument("--threats", type=int, default=30)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--new-events", type=int, default=60)
    args = parser.parse_args()
    fleet = Fleet.generate(args.devices, seed=3, platforms={"Mac": 1.0}, apps_per_device=(0, 0))
    now = datetime(2026, 11, 23, 10, tzinfo=timezone.utc)
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        tenant = sim.tenant
        tenant.clock = lambda: now
        ids = fleet.device_ids()
        for n in range(args.cves):
            tenant.add_cve(f"CVE-2026-{n:05d}", ids[n % 4::4], cvss_score=5.0 + (n % 5))
        for n in range(args.threats):
            tenant.add_threat(ids[n % len(ids)], f"Threat{n}")
        for n in range(args.events):
            tenant.add_audit_event(occurred_at=now - timedelta(seconds=n * 29 * 86400 // max(1, args.events)))
        store = MemoryObjectStore()
        first, first_seconds = one_run(sim, store, "20261123T100000Z", None, now)
        now += timedelta(hours=1)
        for n in range(args.new_events):
            tenant.add_audit_event(occurred_at=now - timedelta(minutes=n % 60))
        second, second_seconds = one_run(sim, store, "20261123T110000Z", first, now)
    print(f"{args.devices} Macs, {args.cves} CVEs on a quarter of them each, {args.threats} threats, "
          f"{args.events} audit events then {args.new_events} new")
    for label, manifest, seconds in (("first run (backfill)", first, first_seconds),
                                     ("next run (hourly)", second, second_seconds)):
        sources = manifest.document["tenant"]["sources"]
        total = sum(read["requests"] for read in sources.values())
        print(f"{label}: {total} requests in {seconds:.2f} s")
        for name, read in sources.items():
            print(f"  {name:<26}{read['status']:<10}{read.get('rows', 0):>8} rows {read['requests']:>5} requests")


if __name__ == "__main__":
    main()
