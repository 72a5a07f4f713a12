"""Lists whose order means nothing (tags, installed profiles, volumes, users, mdm_enabled_user) may come
back from Kandji in another order: that alone is no change. Two runs of the collector handler against the
simulator, the second with every such list served in another order; the differ publishes nothing, and each
unchanged row is byte-identical (so the differ's raw-bytes shortcut still skips it)."""

from __future__ import annotations

import json

from aws_helpers import read_object
from handler_pipeline import the_manifest

from simulator import Fleet

SHARED_NAME_PROFILES = [
    {"name": "Wi-Fi", "uuid": "0F0D", "identifier": "com.example.wifi.office",
     "payload_types": ["com.apple.wifi.managed"]},
    {"name": "Wi-Fi", "uuid": "1A2B", "identifier": "com.example.wifi.guest",
     "payload_types": ["com.apple.wifi.managed"]},
    {"name": "Passcode", "uuid": "3C4D", "identifier": "com.example.passcode",
     "payload_types": ["com.apple.mobiledevice.passwordpolicy"]},
]

# A real Mac lists both volumes (kandji-api.md, "Real responses").
REAL_MAC_VOLUMES = [
    {"name": "Macintosh HD", "format": "APFS", "percent_used": "9%", "capacity": "494.38 GB",
     "available": "415.1 GB", "encrypted": "No", "identifier": "disk1s5s1"},
    {"name": "Macintosh HD - Data", "format": "APFS (Encrypted)", "percent_used": "9%", "capacity": "494.38 GB",
     "available": "415.1 GB", "encrypted": "Yes", "identifier": "disk1s1"},
]


def rows_without_snapshot_id(manifest: dict, table: str) -> list[bytes]:
    lines = [line for key in manifest["tables"][table]["keys"] for line in read_object(key).splitlines()]
    return [line.replace(manifest["snapshot_id"].encode(), b"") for line in lines]


def test_lists_served_in_another_order_publish_nothing_and_keep_rows_byte_identical(pipeline):
    run = pipeline(Fleet.generate(30, seed=43))
    ids = run.fleet.device_ids()
    for device_id in ids[:6]:
        run.sim.raw_values.set(device_id, "details", "installed_profiles", SHARED_NAME_PROFILES)
        run.sim.raw_values.set(device_id, "details", "mdm.mdm_enabled_user", ["Rick & Morty", "ada", "Zoe"])
        run.sim.raw_values.set(device_id, "list_item", "tags", ["Finance", "Exec", "Remote"])
        run.sim.raw_values.set(device_id, "details", "tags", ["Finance", "Exec", "Remote"])
        run.sim.raw_values.set(device_id, "details", "volumes", REAL_MAC_VOLUMES)
    before = {device_id: run.sim.raw_values.apply("details", device_id, run.fleet.details(device_id))
              for device_id in ids}
    first = the_manifest(run.collect())
    run.diff(first["snapshot_id"])

    run.sim.raw_values.reorder_lists(seed=7)
    after = {device_id: run.sim.raw_values.apply("details", device_id, run.fleet.details(device_id))
             for device_id in ids}
    moved = {name for device_id in ids for name in ("tags", "installed_profiles", "volumes", "users")
             if before[device_id].get(name) != after[device_id].get(name)}
    assert moved == {"tags", "installed_profiles", "volumes", "users"}  # the second run really sees other orders
    second = the_manifest(run.collect())

    assert run.diff(second["snapshot_id"])["events"] == 0
    assert [m["change_type"] for m in run.published_once()] == ["snapshot_summary", "snapshot_summary"]
    for table in ("devices", "device_details"):
        first_rows = rows_without_snapshot_id(first, table)
        second_rows = rows_without_snapshot_id(second, table)
        if table == "device_details":  # fetched_at is the time of each read: compare the rest
            first_rows = [strip_fetched_at(line) for line in first_rows]
            second_rows = [strip_fetched_at(line) for line in second_rows]
        assert first_rows == second_rows, table


def strip_fetched_at(line: bytes) -> bytes:
    row = json.loads(line)
    row.pop("fetched_at")
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()
