"""What carrying unread posture costs the collector: the device_posture rows of one run, with and without carrying.

A fleet's six Prism categories are read in memory (no HTTP), then each device's posture row is built
as the collector builds it: first with no previous snapshot (nothing to carry), then with one (the
non-Macs, which have no row in the Mac-only categories, make the collector look at their previous
row), then with `application_firewall` failing (every Mac's value carried from the previous
snapshot). Printed: the best of `--repeat` timings of each, and the devices carried.

    nice .venv/bin/python bench/posture_carry.py [--devices 20000 --repeat 3]
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401 (puts the layer on the path)

from kandji_snapshots.collect.posture import PostureReader, PreviousPosture
from kandji_snapshots.errors import KandjiApiError
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.normalize import posture_row
from kandji_snapshots.snapshots.storage import MemoryObjectStore
from kandji_snapshots.snapshots.table_io import TableWriter
from simulator import Fleet
from simulator.prism_categories import PrismCategories

FIRST, SECOND = "20261123T100000Z", "20261123T110000Z"


class InMemoryPrism:
    def __init__(self, fleet: Fleet, failing: str | None = None):
        self._categories = PrismCategories(fleet)
        self._failing = failing

    def iter_prism_category(self, category: str):
        if category == self._failing:
            raise KandjiApiError("500 from the Kandji API", status=500)
        return iter(self._categories.rows(category))


def build_rows(api: InMemoryPrism, ids: list[str], previous: PreviousPosture, snapshot_id: str,
               writer: TableWriter | None = None) -> tuple[float, dict[str, int | None]]:
    index = PostureReader(api).read(ids, "2026-11-23T11:00:00.000000Z")
    start = time.perf_counter()
    for device_id in ids:
        categories, carried_from = index.take(device_id, previous.for_device(device_id))
        row = posture_row(categories, snapshot_id, device_id, index.fetched_at, carried_from)
        if writer is not None:
            writer.write(row)
    return time.perf_counter() - start, {name: read.carried for name, read in index.categories.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    fleet = Fleet.generate(args.devices, seed=1)
    ids = sorted(fleet.device_ids())
    store = MemoryObjectStore()
    writer = TableWriter(store, "device_posture", FIRST)
    build_rows(InMemoryPrism(fleet), ids, PreviousPosture(store, None), FIRST, writer)
    previous = Manifest({"snapshot_id": FIRST, "finished_at": "2026-11-23T10:05:00.000000Z",
                         "tables": {"device_posture": writer.close()}})
    macs = sum(fleet.platform(device_id) == "Mac" for device_id in ids)
    print(f"{len(ids):,} devices ({macs:,} Macs), best of {args.repeat}")
    for label, failing, before in (("no previous snapshot", None, None),
                                   ("previous snapshot, all read", None, previous),
                                   ("application_firewall failed", "application_firewall", previous)):
        timings = [build_rows(InMemoryPrism(fleet, failing), ids, PreviousPosture(store, before), SECOND)
                   for _ in range(args.repeat)]
        carried = {name: count for name, count in timings[0][1].items() if count}
        print(f"  {label:32} {min(seconds for seconds, _ in timings):6.2f} s   carried: {carried or 'none'}")


if __name__ == "__main__":
    main()
