"""Collector pace against a simulator that enforces Kandji's 50 requests/s (429 beyond it)
with 40 ms latency per request: how close does a run get to the ideal the limit allows?

    .venv/bin/python bench/collector_pace.py [--devices 2000]
"""

from __future__ import annotations

import argparse
import tempfile

from common import Timer, collector, peak_rss_mb, simulator_process

from kandji_snapshots.snapshots.storage import LocalObjectStore

API_LIMIT_PER_SECOND = 50


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--ceiling", type=float, default=45.0, help="the collector's own requests/s ceiling")
    args = parser.parse_args()
    with simulator_process(args.devices, rate_limit_per_second=API_LIMIT_PER_SECOND, latency=0.04) as url, \
            tempfile.TemporaryDirectory() as folder:
        run = collector(url, LocalObjectStore(folder), requests_per_second=args.ceiling)
        with Timer() as timer:
            manifest = run.collector.collect()
    requests = run.stats.as_dict()
    ideal = requests["total"] / API_LIMIT_PER_SECOND
    lost = args.devices - manifest.document["device_count"]
    print(f"collector pace: {args.devices} devices, API limit {API_LIMIT_PER_SECOND}/s, 40 ms latency, "
          f"collector ceiling {args.ceiling:g}/s")
    print(f"  requests made        {requests['total']}")
    print(f"  wall time            {timer.seconds:.1f} s")
    print(f"  ideal (requests/50)  {ideal:.1f} s")
    print(f"  wall / ideal         {timer.seconds / ideal:.3f}   (target <= 1.2)")
    print(f"  429s met             {requests['rate_limited']} (retries {requests['retries']})")
    print(f"  devices lost         {lost}")
    print(f"  peak memory (RSS)    {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
