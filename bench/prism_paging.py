"""What the overlapping Prism pages cost: requests to read a fleet's whole app table by offset.

For each page size Prism might serve (300, the documented maximum; 100, the simulator's default; 25,
as recorded), the fleet's `/prism/apps` table is read once with pages that do not overlap (the
paging before shifts were noticed: PRISM_OVERLAP set to 0 for that read) and once as the client
pages now (each page repeats the last PRISM_OVERLAP rows of the one before), then once more with a
device unenrolled mid-read (its rows already read: the pages must resynchronise further back).
Printed: rows, requests of each read and the overhead in percent, measured in one run.

    nice .venv/bin/python bench/prism_paging.py [--devices 20000 --page-rows 300 100 25]
"""

from __future__ import annotations

import argparse

from common import TOKEN

from kandji_snapshots.kandji import paging
from kandji_snapshots.kandji.client import KandjiClient
from kandji_snapshots.kandji.config import parse_secret
from kandji_snapshots.kandji.rate_limiter import RateLimiter
from simulator import Fleet, KandjiSimulator


def read_requests(sim: KandjiSimulator, overlap: int) -> tuple[int, int]:
    """(rows read, requests sent) for one whole read of the app table with `overlap`."""
    saved, paging.PRISM_OVERLAP = paging.PRISM_OVERLAP, overlap
    try:
        credentials = parse_secret(TOKEN, fallback_url=sim.api_url, allow_insecure_localhost=True)
        client = KandjiClient(credentials, limiter=RateLimiter(100_000))
        rows = sum(1 for _ in client.prism_apps())
        return rows, client.stats.by_endpoint.get("prism", 0)
    finally:
        paging.PRISM_OVERLAP = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--page-rows", type=int, nargs="+", default=[300, 100, 25])
    args = parser.parse_args()
    fleet = Fleet.generate(args.devices, seed=1)
    print(f"{'page rows':>9} {'rows':>9} {'no overlap':>11} {'overlap ' + str(paging.PRISM_OVERLAP):>10} "
          f"{'overhead':>9} {'+ 1 device unenrolled mid-read':>31}")
    for page_rows in args.page_rows:
        with KandjiSimulator(fleet, token=TOKEN, rate_limit_per_hour=None, prism_page_rows=page_rows) as sim:
            rows, before = read_requests(sim, 0)
            again, after = read_requests(sim, paging.PRISM_OVERLAP)
            assert again == rows
            gone = fleet.device_ids(ordering=None)[0]  # its rows come first: read by the third page
            sim.faults.change_during_prism_read(lambda: fleet.remove(gone), before_page=3)
            _, shifted = read_requests(sim, paging.PRISM_OVERLAP)
        print(f"{page_rows:>9} {rows:>9,} {before:>11,} {after:>10,} {100 * (after - before) / before:>8.1f}% "
              f"{shifted:>31,}")
        fleet = Fleet.generate(args.devices, seed=1)  # the unenrolled device back, for the next page size


if __name__ == "__main__":
    main()
