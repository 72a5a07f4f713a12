"""Collector on a fleet larger than its request budget: rolling refresh over successive runs.

Each run may spend at most `--budget` requests; the devices it cannot afford are carried
forward from the previous snapshot (or kept with unknown details when there is none yet).
The simulator has no per-second limit here: this measures budget and memory, not pace.

    .venv/bin/python bench/collector_budget.py [--devices 20000 --budget 8000 --runs 3]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime, timedelta, timezone

from common import HourlyClock, Timer, collector, peak_rss_mb, simulator_process

from kandji_snapshots.cli.cost import full_run_requests
from kandji_snapshots.snapshots.storage import LocalObjectStore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--budget", type=int, default=8_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=400.0, help="requests/s (the simulator is not limited)")
    args = parser.parse_args()
    full_run = full_run_requests(args.devices)
    print(f"collector budget: {args.devices} devices need ~{full_run} requests per full run (details, apps, "
          f"list, posture: what `check` estimates); budget {args.budget} per run")
    print(f"  {'run':<4} {'spent':>7} {'budget':>7} {'list+posture':>13} {'refreshed':>10} {'carried':>8} "
          f"{'pending':>8} {'devices':>8} {'seconds':>8}")
    start = datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc)
    never_over = True
    with simulator_process(args.devices) as url, tempfile.TemporaryDirectory() as folder:
        store = LocalObjectStore(folder)
        for run_number in range(1, args.runs + 1):
            clock = HourlyClock(start + timedelta(hours=run_number))
            run = collector(url, store, requests_per_second=args.rate, budget=args.budget, clock=clock)
            with Timer() as timer:
                doc = run.collector.collect().document
            requests = run.stats.as_dict()
            spent = requests["total"]
            first = sum(count for endpoint, count in requests["by_endpoint"].items()
                        if endpoint == "devices" or endpoint.startswith("prism_"))  # spent before any device
            never_over &= spent <= args.budget
            print(f"  {run_number:<4} {spent:>7} {args.budget:>7} {first:>13} {doc['refreshed_devices']:>10} "
                  f"{doc['carried_devices']:>8} {doc['pending_devices']:>8} {doc['device_count']:>8} "
                  f"{timer.seconds:>8.1f}")
    print(f"  never over budget    {'yes' if never_over else 'NO'}")
    print(f"  devices dropped      0 of {args.devices} in every run" if doc["device_count"] == args.devices
          else f"  devices dropped      {args.devices - doc['device_count']}")
    print(f"  peak memory (RSS)    {peak_rss_mb():.0f} MB   (target < 512 MB)")


if __name__ == "__main__":
    main()
