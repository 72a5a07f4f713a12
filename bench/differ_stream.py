"""Differ on two large snapshots: is it close to the cost of merely reading them?

Builds two snapshots of `--devices` devices with ~40 apps each (rows cloned from the
simulator's devices, so their shape is real). Between the two, every device checks in
again (last_check_in, time_since_boot, volume free space change, and a new app inventory
renumbers and restamps every app row, as Kandji does: not changes) and 1% of
devices get an OS update and one app update (2 events each). Then, each in a fresh
process so peak memory is its own:

  read:      decompress and iterate every line of both snapshots' objects (what reading costs)
  diff:      the differ, end to end (changes file written, events published in memory), skipping the
             devices whose fingerprints are equal (diff/changed_devices.py)
  diff-full: the same with fingerprints off: every device compared, as before them

With `--changed-percent 100` (a mass update: every device changed) the differ runs as in
Lambda (MaxEventsPerRun 500: the summary only), and the figure that matters is the largest
fleet whose comparison fits in one invocation: devices per second x (the differ's 300 s
timeout - the 30 s it keeps to save its checkpoint). A larger fleet is compared over several
invocations (the checkpoint), so it is not lost, only slower.

    .venv/bin/python bench/differ_stream.py        # 20,000 and 100,000 devices, 1% and 100% changed
    .venv/bin/python bench/differ_stream.py --devices 20000 --changed-percent 1
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from common import ROOT, Timer, peak_rss_mb

from kandji_snapshots.diff.fingerprints import FingerprintRecorder
from kandji_snapshots.diff.rules import ChangeRules
from kandji_snapshots.snapshots.catalog import MANIFEST_SCHEMA_VERSION, Manifest, write_manifest
from kandji_snapshots.snapshots.layout import TABLE_NAMES
from kandji_snapshots.snapshots.normalize import app_rows, details_row, device_row, encode_row
from kandji_snapshots.snapshots.storage import LocalObjectStore
from kandji_snapshots.snapshots.table_io import TableWriter, iter_lines

BEFORE, AFTER = "20261123T100000Z", "20261123T110000Z"
DIFFER_MEMORY_MB, ONE_VCPU_MB = 1024, 1769  # template.yaml's DifferFunction; Lambda's memory per vCPU
FETCHED_BEFORE, FETCHED_AFTER = "2026-11-23T10:00:05.000000Z", "2026-11-23T11:00:05.000000Z"


def templates(count: int = 50):
    """Normalized rows of a few simulated Macs: the shapes every cloned device takes."""
    from simulator import Fleet

    fleet = Fleet.generate(count, seed=3, platforms="Mac", apps_per_device=(38, 42))
    return [(fleet.list_item(d), fleet.details(d), fleet.apps(d)) for d in fleet.device_ids()]


PLACEHOLDER_ID, PLACEHOLDER_SERIAL = "ffffffff-ffff-4fff-bfff-ffffffffffff", "SNPLACEHOLDER"


def encoded_rows(shape, snapshot: str, fetched: str, *, checked_in: bool, changed: bool) -> dict[str, list[bytes]]:
    """One device's encoded lines per table, with placeholders where its id and serial go."""
    item, details, apps = shape
    raw_item = {**item, "device_id": PLACEHOLDER_ID, "serial_number": PLACEHOLDER_SERIAL}
    raw_details = json.loads(json.dumps(details))
    raw_apps = [dict(app) for app in apps]
    if checked_in:  # what every check-in changes, and nothing else
        raw_item["last_check_in"] = "2026-11-23T10:59:00Z"
        raw_details.setdefault("mdm", {})["last_check_in"] = "2026-11-23 10:59:00+00:00"
        raw_details.setdefault("general", {})["time_since_boot"] = "2 days ago"
        for volume in raw_details.get("volumes") or []:
            volume["available"] = "42.17 GB"
        for number, app in enumerate(raw_apps):  # a new inventory: Kandji renumbers and restamps app rows
            raw_apps[number] = {**app, "app_id": str(50_000_000 + number),
                                "creation_date": "2026-11-23 10:59:01.123000+00:00",
                                "modification_date": "2026-11-23 10:59:01.123000+00:00"}
    if changed:  # an OS update and one app update: two events
        raw_item["os_version"] = raw_details["general"]["os_version"] = "15.9"
        raw_apps[0] = {**raw_apps[0], "version": raw_apps[0]["version"] + ".1"}
    return {
        "devices": [encode_row(device_row(raw_item, snapshot))],
        "device_details": [encode_row(details_row(raw_details, snapshot, PLACEHOLDER_ID, fetched))],
        "device_apps": [encode_row(row) for row in app_rows(raw_apps, snapshot, PLACEHOLDER_ID, fetched)],
    }


def build(folder: str, devices: int, changed_percent: float = 1.0) -> int:
    """Writes both snapshots; returns the number of change events the differ must find.

    Rows are encoded once per shape and stamped with each device's id and serial, so
    building 8 million rows takes seconds, not an hour.
    """
    store = LocalObjectStore(folder)
    shapes = templates()
    rng = random.Random(7)
    ids = sorted(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(devices))
    changed = set(rng.sample(ids, int(devices * changed_percent / 100)))
    variants = {
        (BEFORE, False): [encoded_rows(shape, BEFORE, FETCHED_BEFORE, checked_in=False, changed=False)
                          for shape in shapes],
        (AFTER, False): [encoded_rows(shape, AFTER, FETCHED_AFTER, checked_in=True, changed=False)
                         for shape in shapes],
        (AFTER, True): [encoded_rows(shape, AFTER, FETCHED_AFTER, checked_in=True, changed=True)
                        for shape in shapes],
    }
    # Fingerprinted as the collector does it: TableWriter hands every row to the recorder.
    recorders = {snapshot: FingerprintRecorder(ChangeRules()) for snapshot in (BEFORE, AFTER)}
    writers = {snapshot: {table: TableWriter(store, table, snapshot, on_line=recorders[snapshot].on_line(table))
                          for table in TABLE_NAMES}
               for snapshot in (BEFORE, AFTER)}
    for index, device_id in enumerate(ids):
        stamp = {PLACEHOLDER_ID.encode(): device_id.encode(), PLACEHOLDER_SERIAL.encode(): f"SN{index:011d}".encode()}
        for snapshot in (BEFORE, AFTER):
            rows = variants[(snapshot, snapshot == AFTER and device_id in changed)][index % len(shapes)]
            for table, lines in rows.items():
                for line in lines:
                    for placeholder, value in stamp.items():
                        line = line.replace(placeholder, value)
                    writers[snapshot][table].write_line(line, device_id)
    for snapshot in (BEFORE, AFTER):
        tables = {table: writer.close() for table, writer in writers[snapshot].items()}
        write_manifest(store, Manifest({"schema_version": MANIFEST_SCHEMA_VERSION, "snapshot_id": snapshot,
                                        "tables": tables, "skipped_devices": [], "device_count": devices,
                                        "fingerprints": recorders[snapshot].write(store, snapshot)}))
    return 2 * len(changed)


def phase_read(folder: str) -> dict:
    store = LocalObjectStore(folder)
    from kandji_snapshots.snapshots.catalog import load_manifest

    lines = 0
    with Timer() as timer:
        for snapshot in (BEFORE, AFTER):
            manifest = load_manifest(store, snapshot)
            for table in TABLE_NAMES:
                for _ in iter_lines(store, manifest.table_keys(table)):
                    lines += 1
    return {"seconds": timer.seconds, "cpu": timer.cpu_seconds, "lines": lines, "peak_mb": peak_rss_mb()}


def phase_diff(folder: str, max_events: int = 10**9, use_fingerprints: bool = True) -> dict:
    from kandji_snapshots.diff.differ import DifferSettings
    from kandji_snapshots.diff.publisher import MemoryPublisher
    from kandji_snapshots.diff.runtime import DifferEnvironment, build_differ

    publisher = MemoryPublisher()
    env = DifferEnvironment(bucket=folder, topic_arn="memory", settings=DifferSettings(max_events_per_run=max_events,
                                                                                   use_fingerprints=use_fingerprints))
    differ = build_differ(env, store=LocalObjectStore(folder), publisher=publisher)
    with Timer() as timer:
        result = differ.run(AFTER)
    return {"seconds": timer.seconds, "cpu": timer.cpu_seconds, "events": result.event_count,
            "counts": result.counts_by_change_type, "published": len(publisher.messages), "peak_mb": peak_rss_mb()}


def in_child(phase: str, folder: str, max_events: int = 10**9) -> dict:
    output = subprocess.run([sys.executable, __file__, "--phase", phase, "--folder", folder,
                             "--max-events", str(max_events)], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_phase(phase: str, folder: str, max_events: int) -> dict:
    if phase == "read":
        return phase_read(folder)
    return phase_diff(folder, max_events, use_fingerprints=phase == "diff")


def measure(devices: int, changed_percent: float) -> None:
    """One fleet size and share changed: build, then each phase in a fresh process."""
    mass = changed_percent > 1
    with tempfile.TemporaryDirectory() as folder:
        with Timer() as built:
            expected = build(folder, devices, changed_percent)
        read = in_child("read", folder)
        max_events = 500 if mass else 10**9  # a mass update: as in Lambda, summary only
        diff = in_child("diff", folder, max_events)
        shutil.rmtree(Path(folder) / "changes")  # the run's changes file and markers: the next run starts afresh
        full = in_child("diff-full", folder, max_events)
    print(f"\ndiffer: two snapshots of {devices} devices (~40 apps each), {changed_percent:g}% changed "
          f"(built and fingerprinted in {built.seconds:.0f} s)")
    print(f"  lines in both snapshots   {read['lines']:,}")
    print(f"  plain read (decompress)   {read['seconds']:.1f} s wall, {read['cpu']:.1f} s CPU, "
          f"peak {read['peak_mb']:.0f} MB")
    print(f"  {'':26}{'fingerprints':>14}{'full compare':>14}")
    print(f"  {'CPU s':26}{diff['cpu']:>14.2f}{full['cpu']:>14.2f}")
    print(f"  {'CPU / plain read':26}{diff['cpu'] / read['cpu']:>14.2f}{full['cpu'] / read['cpu']:>14.2f}"
          f"   (target <= 0.3 at 1%; at 100% no slower than the full compare)")
    print(f"  {'wall s':26}{diff['seconds']:>14.1f}{full['seconds']:>14.1f}")
    print(f"  {'peak memory (RSS) MB':26}{diff['peak_mb']:>14.0f}{full['peak_mb']:>14.0f}   (target < 300 MB)")
    print(f"  events found / expected   {diff['events']} / {expected}   {diff['counts']}")
    same = diff["events"] == full["events"] and diff["counts"] == full["counts"]
    print(f"  full compare found        {full['events']} ({'the same' if same else 'DIFFERENT'})")
    print(f"  messages published        {diff['published']} (events + summary)")
    # Per CPU second, whatever else this machine runs. Lambda gives CPU in proportion to memory
    # (1,769 MB is one vCPU): the differ's 1,024 MB get 0.58 of a core per second.
    per_second = devices / diff["cpu"]
    in_lambda = per_second * DIFFER_MEMORY_MB / ONE_VCPU_MB
    print(f"  devices compared / CPU s  {per_second:,.0f} ({devices / diff['seconds']:,.0f} per wall second here)")
    print(f"  largest fleet in one differ invocation (300 s timeout - 30 s checkpoint margin, "
          f"{DIFFER_MEMORY_MB:,} MB = {DIFFER_MEMORY_MB / ONE_VCPU_MB:.2f} vCPU): about {in_lambda * 270:,.0f} devices "
          "if a Lambda core is as fast as this machine's; larger fleets go on from the checkpoint")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--phase", choices=("read", "diff", "diff-full"))
    parser.add_argument("--folder")
    parser.add_argument("--changed-percent", type=float, nargs="+", default=[1.0, 100.0])
    parser.add_argument("--max-events", type=int, default=10**9)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.folder, args.max_events)))
        return
    for devices in args.devices:
        for changed_percent in args.changed_percent:
            measure(devices, changed_percent)


if __name__ == "__main__":
    main()
