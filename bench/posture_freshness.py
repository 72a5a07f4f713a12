"""Whole-fleet posture under the default budget: every device's Prism posture, every run.

For each fleet size, consecutive runs (each "an hour" after the last) with the default request
budget: posture (device list + the six Prism categories) comes first, details and apps get what
is left (rolling refresh). Between runs the firewall is turned off on some random Macs and
FileVault on others; the differ must publish each of them in the run that follows.

Printed per run: the share of devices whose posture is at most one run old (goal 100%), the
share whose details are, requests spent against the budget, wall time against the 50/s ideal
(requests / 50: what the run takes at Kandji's per-second limit; the simulator is not limited
here, so the measured wall time is the collector's own overhead), the flips published, and the
collector's peak memory. The simulator runs in its own process.

    nice .venv/bin/python bench/posture_freshness.py [--devices 20000 50000 --runs 3 --flips 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import tempfile
from datetime import datetime, timedelta, timezone

from common import PRISM_PAGE_ROWS, TOKEN, HourlyClock, Timer, collector, peak_rss_mb

from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.diff.publisher import MemoryPublisher
from kandji_snapshots.settings import DEFAULT_REQUEST_BUDGET
from kandji_snapshots.snapshots.storage import LocalObjectStore
from kandji_snapshots.snapshots.table_io import iter_lines

KANDJI_PACE = 50.0  # requests per second Kandji allows


def serve(devices: int, connection) -> None:
    """The simulator process: serves the fleet, flips posture when asked, stops when told."""
    from simulator import Fleet, KandjiSimulator

    fleet = Fleet.generate(devices, seed=1)
    with KandjiSimulator(fleet, token=TOKEN, rate_limit_per_hour=None, prism_page_rows=PRISM_PAGE_ROWS) as sim:
        macs = [row["device_id"] for row in sim.prism.rows("application_firewall") if row["status"]]
        connection.send(sim.api_url)
        while True:
            command, argument = connection.recv()
            if command == "stop":
                break
            rng = random.Random(argument["seed"])
            firewall = rng.sample(macs, argument["flips"])
            filevault = [d for d in rng.sample(macs, argument["flips"] * 3) if d not in firewall
                         and fleet.details(d)["filevault"]["filevault_enabled"] is True][:argument["flips"]]
            for device_id in firewall:
                sim.prism.set(device_id, "application_firewall", status=False)
            for device_id in filevault:
                fleet.set_filevault(device_id, False)
            macs = [d for d in macs if d not in firewall]
            connection.send({"firewall": firewall, "filevault": filevault})


def posture_fresh(store, manifest) -> tuple[int, int]:
    """(devices whose posture was read by this run, devices whose details were fetched by it)."""
    fetched_at = manifest.document["posture"]["fetched_at"].encode()
    posture = sum(1 for line in iter_lines(store, manifest.table_keys("device_posture"))
                  if b'"fetched_at":"' + fetched_at + b'","device_information":{' in line)
    started = manifest.document["started_at"][:13].encode()  # details fetched during this run's hour
    details = sum(1 for line in iter_lines(store, manifest.table_keys("device_details"))
                  if b'"fetched_at":"' + started in line[:120])
    return posture, details


def bench(devices: int, runs: int, flips: int, rate: float) -> None:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=serve, args=(devices, theirs), daemon=True)
    process.start()
    url = ours.recv()
    print(f"\n{devices:,} devices, budget {DEFAULT_REQUEST_BUDGET:,} requests per run")
    print(f"  {'run':<4} {'posture<=1 run':>15} {'details fresh':>14} {'requests':>9} {'budget':>7} "
          f"{'wall s':>7} {'ideal s (50/s)':>15} {'flips published':>16}")
    start = datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc)
    never_over = True
    try:
        with tempfile.TemporaryDirectory() as folder:
            store = LocalObjectStore(folder)
            flipped: dict[str, list[str]] = {}
            for run_number in range(1, runs + 1):
                clock = HourlyClock(start + timedelta(hours=run_number))
                run = collector(url, store, requests_per_second=rate, budget=DEFAULT_REQUEST_BUDGET, clock=clock)
                with Timer() as timer:
                    manifest = run.collector.collect()
                spent = run.stats.as_dict()["total"]
                never_over &= spent <= DEFAULT_REQUEST_BUDGET
                posture, details = posture_fresh(store, manifest)
                count = manifest.document["device_count"]
                published = "-"
                if flipped:
                    publisher = MemoryPublisher()
                    SnapshotDiffer(store, publisher).run(manifest.snapshot_id)
                    high = {(event["device_id"], change.get("reason")) for event in publisher.events
                            for change in event.get("changes", []) if change.get("severity") == "high"}
                    wanted = {(d, "firewall turned off") for d in flipped["firewall"]} | {
                        (d, "FileVault turned off") for d in flipped["filevault"]}
                    published = f"{len(wanted & high)}/{len(wanted)}"
                print(f"  {run_number:<4} {100 * posture / count:>14.1f}% {100 * details / count:>13.1f}% "
                      f"{spent:>9,} {DEFAULT_REQUEST_BUDGET:>7,} {timer.seconds:>7.1f} "
                      f"{spent / KANDJI_PACE:>15.0f} {published:>16}", flush=True)
                if run_number < runs:
                    ours.send(("flip", {"seed": run_number, "flips": flips}))
                    flipped = ours.recv()
    finally:
        ours.send(("stop", None))
        process.join(timeout=30)
    print(f"  never over budget    {'yes' if never_over else 'NO'}")
    print(f"  peak memory (RSS)    {peak_rss_mb():.0f} MB (collector and differ; the simulator runs apart)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, nargs="+", default=[20_000, 50_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flips", type=int, default=10, help="firewalls and FileVaults turned off between runs")
    parser.add_argument("--rate", type=float, default=1000.0, help="client pace, requests/s (simulator unlimited)")
    args = parser.parse_args()
    for devices in args.devices:
        bench(devices, args.runs, args.flips, args.rate)


if __name__ == "__main__":
    main()
