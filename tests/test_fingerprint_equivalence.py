"""The fingerprint shortcut is exact: the differ finds the same events, byte for byte, with and without it.

Each case collects two snapshots of a fake fleet with the real collector (which writes the
fingerprints), then compares them twice: skipping the devices whose fingerprints are equal
(diff/changed_devices.py), and reading every device. The cases: check-in noise only, the known
mutation set (each kind of change on its own device, parts split mid-device), a mass change, and
changed ignore settings (the differ ignoring more: the shortcut holds; the fingerprints cut with a
pattern the differ does not ignore: it is not used). The last test breaks the fingerprint on purpose
(it leaves out a compared field) and checks that this comparison catches it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from differ_fixtures import FIRST, SECOND, FakeFleet, app
from kandji_fakes import StepClock

from kandji_snapshots.collect.collector import CollectorSettings, SnapshotCollector
from kandji_snapshots.diff import fingerprints
from kandji_snapshots.diff.changed_devices import changed_device_pairs
from kandji_snapshots.diff.differ import diff_snapshots
from kandji_snapshots.diff.field_changes import VolatileValues
from kandji_snapshots.diff.rules import ChangeRules
from kandji_snapshots.snapshots import table_io
from kandji_snapshots.snapshots.catalog import Manifest, load_manifest, write_manifest
from kandji_snapshots.snapshots.storage import MemoryObjectStore


def posture(fleet: FakeFleet, device_id: str, *, filevault: bool = True, firewall: bool = True,
            collected: str = "2026-11-22T08:00:00Z") -> None:
    columns = {
        "filevault": {"status": filevault, "key_type": "personal", "key_escrowed": True,
                      "last_collected_at": collected},
        "application_firewall": {"status": firewall, "stealth_mode": False, "last_collected_at": collected},
        "gatekeeper_and_xprotect": {"gatekeeper_status": True, "xprotect_version": "5290",
                                    "last_collected_at": collected},
    }
    for category, values in columns.items():
        fleet.posture.setdefault(category, {})[device_id] = values


def mac_fleet(count: int) -> FakeFleet:
    fleet = FakeFleet.of(count)
    for device_id in fleet.devices:
        posture(fleet, device_id)
    return fleet


def collect(fleet: FakeFleet, store, hour: int, *, rows_per_part: int = 100_000,
            rules: ChangeRules | None = None):
    clock = StepClock(datetime(2026, 11, 23, hour, 0, 0, tzinfo=timezone.utc))
    return SnapshotCollector(fleet, store, clock=clock, change_rules=rules,
                             settings=CollectorSettings(max_workers=2, rows_per_part=rows_per_part)).collect()


def snapshots(fleet: FakeFleet, mutate, *, rows_per_part: int = 100_000, collector_rules: ChangeRules | None = None):
    store = MemoryObjectStore()
    collect(fleet, store, 10, rows_per_part=rows_per_part, rules=collector_rules)
    fleet.check_in()
    for device_id in fleet.apps:  # a new inventory: Kandji renumbers every app row
        fleet.apps[device_id] = [{**row, "app_id": str(int(row["app_id"]) + 1000)} for row in fleet.apps[device_id]]
    mutate(fleet)
    collect(fleet, store, 11, rows_per_part=rows_per_part, rules=collector_rules)
    return store


def both_paths(store, rules: ChangeRules | None = None) -> tuple[bytes, bytes, list[bytes] | None]:
    """(events with the shortcut, events without it, the device ids the shortcut read; None: not used)."""
    previous, current = load_manifest(store, FIRST), load_manifest(store, SECOND)
    rules = rules or ChangeRules()
    fast = list(diff_snapshots(store, previous, current, rules, use_fingerprints=True))
    full = list(diff_snapshots(store, previous, current, rules, use_fingerprints=False))
    pairs = changed_device_pairs(store, previous, current, rules)
    read = None if pairs is None else [pair.device_id for pair in pairs]

    def encode(events):
        return b"\n".join(json.dumps(event, sort_keys=True).encode() for event in events)
    return encode(fast), encode(full), read


def _at(fleet, table, device, *path):
    target = getattr(fleet, table)[device]
    for key in path[:-1]:
        target = target[key]
    return target, path[-1]


def setter(table, device, *path_and_value):
    def mutate(fleet):
        target, key = _at(fleet, table, device, *path_and_value[:-1])
        target[key] = path_and_value[-1]
    return mutate


def known_mutations(fleet: FakeFleet) -> None:
    """Every kind of change the differ reports (and some it must not), one device each."""
    changes = [
        setter("devices", "id-001", "os_version", "14.4.1"),
        setter("devices", "id-002", "agent_installed", False),
        setter("devices", "id-003", "tags", ["eng", "laptop"]),
        setter("devices", "id-004", "user", "email", "bob@example.com"),
        setter("devices", "id-005", "lost_mode_status", "ENABLED"),
        setter("details", "id-006", "filevault", "filevault_enabled", False),
        setter("details", "id-007", "mdm", "mdm_enabled", "False"),
        setter("details", "id-008", "recovery_information", "recovery_lock_enabled", False),
        setter("details", "id-009", "activation_lock", "user_activation_lock_enabled", True),
        setter("details", "id-010", "volumes", 0, "encrypted", "No"),
        setter("details", "id-011", "installed_profiles", [{"name": "Wi-Fi - Corp", "uuid": "a1"}]),
        setter("details", "id-012", "security_information", "firewall_enabled", False),
        setter("details", "id-013", "general", "os_version", "14.5"),  # catches up with the list: not reported
        setter("details", "id-014", "general", "time_since_boot", 'up "2" days'),  # noise with an escape
        setter("details", "id-015", "volumes", 0, "percent_used", 42),  # noise that is not a string
        setter("details", "id-016", "general", "brand_new_field", "x"),  # a field the schema has no column for
        lambda fleet: fleet.apps["id-017"][0].update(version="121.0"),
        lambda fleet: fleet.apps["id-018"].append(app("Figma", "com.figma.Desktop", "116.1")),
        lambda fleet: fleet.apps["id-019"].pop(1),
        lambda fleet: fleet.apps["id-020"].reverse(),  # the same apps in another order: nothing
        lambda fleet: fleet.apps["id-021"].append(dict(fleet.apps["id-021"][0])),  # a duplicate row
        lambda fleet: posture(fleet, "id-022", filevault=False),  # Prism sees FileVault off
        lambda fleet: posture(fleet, "id-023", firewall=False),
        lambda fleet: posture(fleet, "id-024", collected="2026-11-23T10:30:00Z"),  # noise only
        lambda fleet: fleet.posture["gatekeeper_and_xprotect"]["id-025"].update(xprotect_version=None),
        lambda fleet: fleet.posture["application_firewall"].pop("id-026"),  # no row now: carried, no change
        lambda fleet: fleet.remove("id-027"),
        lambda fleet: fleet.add("id-999"),
        lambda fleet: fleet.unenrolled.add("id-028"),  # 404 on details: skipped, carried
        setter("devices", "id-029", "device_name", "<b>Mac</b>\u202e"),
        lambda fleet: fleet.apps.__setitem__("id-030", []),  # every app gone
    ]
    for change in changes:
        change(fleet)


def test_check_in_noise_only_reads_no_device_and_finds_what_the_full_comparison_finds():
    fast, full, read = both_paths(snapshots(mac_fleet(12), lambda fleet: None))
    assert fast == full == b"" and read == []


@pytest.mark.parametrize("member_bytes", [1, 2000, table_io.MEMBER_BYTES])
def test_the_known_mutation_set_gives_the_same_events_byte_for_byte(monkeypatch, member_bytes):
    # Parts of 7 rows: a device's apps rows straddle parts, as they do at 100,000 rows per part; gzip
    # members of one device each, of a few devices, and (at this fleet's size) of a whole part.
    monkeypatch.setattr(table_io, "MEMBER_BYTES", member_bytes)
    store = snapshots(mac_fleet(32), known_mutations, rows_per_part=7)
    fast, full, read = both_paths(store)
    assert fast == full and full.count(b"\n") >= 20  # every mutation that is a change was found
    assert read is not None and b"id-000" not in read and b"id-031" not in read  # unchanged: skipped


def test_a_mass_change_gives_the_same_events_byte_for_byte():
    def everything(fleet):
        for device_id in fleet.devices:
            fleet.devices[device_id]["os_version"] = "15.1"
            fleet.details[device_id]["general"]["os_version"] = "15.1"
            fleet.apps[device_id][0]["version"] = "121.0"
    store = snapshots(mac_fleet(20), everything, rows_per_part=11)
    fast, full, read = both_paths(store)
    assert fast == full and read is not None and len(read) == 20


def test_a_differ_that_ignores_more_keeps_the_shortcut_and_the_same_events():
    store = snapshots(mac_fleet(32), known_mutations)
    rules = ChangeRules(("tags", "user.email", "posture.application_firewall.*"))
    fast, full, read = both_paths(store, rules)
    assert fast == full and read is not None
    assert b'"tags"' not in full and b"user.email" not in full


def test_fingerprints_cut_with_a_pattern_the_differ_does_not_ignore_are_not_used():
    store = snapshots(mac_fleet(32), known_mutations, collector_rules=ChangeRules(("tags",)))
    fast, full, read = both_paths(store)
    assert read is None  # the tags change would hide behind equal fingerprints: every device compared
    assert fast == full and b'"tags"' in full


def test_snapshots_without_fingerprints_are_compared_in_full():
    store = snapshots(mac_fleet(8), setter("devices", "id-001", "os_version", "14.4.1"))
    for snapshot_id in (FIRST, SECOND):  # as written before fingerprints existed
        manifest = load_manifest(store, snapshot_id)
        del manifest.document["fingerprints"]
        write_manifest(store, manifest)
    fast, full, read = both_paths(store)
    assert read is None and fast == full and b"14.4.1" in full


@pytest.mark.parametrize("left_out", ["os_version", "device_name"])  # string values: what the cut removes
def test_a_fingerprint_that_leaves_out_a_compared_field_is_caught(monkeypatch, left_out):
    """The comparison above is sensitive: cut a field the differ compares out of the fingerprints and
    the shortcut hides that change, so the two paths no longer agree."""
    real = VolatileValues.for_table

    def cutting_more(table, rules):
        volatile = real(table, rules)
        return VolatileValues((*(volatile.keys if volatile else ()), left_out))
    monkeypatch.setattr(fingerprints.VolatileValues, "for_table", cutting_more)
    store = snapshots(mac_fleet(32), known_mutations)
    monkeypatch.setattr(fingerprints.VolatileValues, "for_table", real)
    fast, full, read = both_paths(store)
    assert fast != full


# --- what only the per-snapshot prefix tells: written by hand, as the collector writes rows ----------

def hand_snapshot(store, snapshot_id: str, details: dict, details_fetched_at: str | None,
                  posture_row_args: tuple | None = None) -> None:
    """One device's snapshot, fingerprinted as the collector does (TableWriter feeding the recorder)."""
    from differ_fixtures import device_item

    from kandji_snapshots.diff.fingerprints import FingerprintRecorder
    from kandji_snapshots.snapshots.catalog import MANIFEST_SCHEMA_VERSION, Manifest
    from kandji_snapshots.snapshots.layout import TABLE_NAMES
    from kandji_snapshots.snapshots.normalize import details_row, device_row, posture_row
    from kandji_snapshots.snapshots.table_io import TableWriter

    recorder = FingerprintRecorder(ChangeRules())
    writers = {table: TableWriter(store, table, snapshot_id, on_line=recorder.on_line(table)) for table in TABLE_NAMES}
    writers["devices"].write(device_row(device_item("id-000"), snapshot_id))
    if posture_row_args is not None:
        categories, fetched_at, carried_from = posture_row_args
        writers["device_posture"].write(posture_row(categories, snapshot_id, "id-000", fetched_at, carried_from))
    writers["device_details"].write(details_row(details, snapshot_id, "id-000", details_fetched_at))
    tables = {table: writer.close() for table, writer in writers.items()}
    write_manifest(store, Manifest({"schema_version": MANIFEST_SCHEMA_VERSION, "snapshot_id": snapshot_id,
                                    "tables": tables, "skipped_devices": [], "device_count": 1,
                                    "previous_snapshot_id": None,
                                    "fingerprints": recorder.write(store, snapshot_id)}))


def test_details_read_for_the_first_time_with_the_same_bytes_are_not_skipped():
    """A device listed but never fetched (fetched_at null) has the same row bytes as one fetched empty."""
    store = MemoryObjectStore()
    hand_snapshot(store, FIRST, {}, None)
    hand_snapshot(store, SECOND, {}, "2026-11-23T11:00:05Z")
    fast, full, read = both_paths(store)
    assert fast == full and b"device_apps_first_read" in full and read == [b"id-000"]


def test_a_filevault_fact_moved_by_when_the_sources_spoke_is_not_skipped():
    """Prism's carried "on" (known 09:00) beat the details' "off" (fetched 08:00); the details fetched
    again at 10:30, saying the same, now win: FileVault turned off, with no byte of either body changed."""
    store = MemoryObjectStore()
    carried = ({"filevault": {"status": True}}, "2026-11-23T10:00:05Z", {"filevault": "2026-11-23T09:00:00Z"})
    off = {"filevault": {"filevault_enabled": False}}
    hand_snapshot(store, FIRST, off, "2026-11-23T08:00:00Z", carried)
    hand_snapshot(store, SECOND, off, "2026-11-23T10:30:00Z", (carried[0], "2026-11-23T11:00:05Z", carried[2]))
    fast, full, read = both_paths(store)
    assert fast == full and b"FileVault turned off" in full and read == [b"id-000"]


def test_an_index_that_does_not_match_the_tables_falls_back_to_every_device(caplog):
    """id-001 changed; its index line says its rows are where id-000's are: the check on the rows' device
    ids catches it, and the devices from there on are compared in full. Same events; nothing lost."""
    import gzip

    store = snapshots(mac_fleet(8), setter("devices", "id-001", "os_version", "14.4.1"))
    key = load_manifest(store, SECOND).document["fingerprints"]["key"]
    lines = gzip.decompress(store.get(key)).splitlines(keepends=True)
    first, second = lines[0].split(b"\t"), lines[1].split(b"\t")
    lines[1] = b"\t".join([second[0], second[1], first[2]])
    store.put(key, gzip.compress(b"".join(lines)))
    previous, current = load_manifest(store, FIRST), load_manifest(store, SECOND)
    fast = list(diff_snapshots(store, previous, current, use_fingerprints=True))
    assert fast == list(diff_snapshots(store, previous, current, use_fingerprints=False))
    assert [event["changes"][0]["after"] for event in fast] == ["14.4.1"]
    assert "fingerprint index unusable" in caplog.text


def test_a_mass_change_noticed_midway_goes_on_in_full_with_the_same_events(monkeypatch, caplog):
    from kandji_snapshots.diff import changed_devices

    monkeypatch.setattr(changed_devices, "SAMPLE_DEVICES", 6)
    caplog.set_level("INFO", logger="kandji_snapshots")

    def most(fleet):
        for device_id in list(fleet.devices)[2:]:
            fleet.devices[device_id]["os_version"] = "15.1"
    store = snapshots(mac_fleet(20), most, rows_per_part=11)
    previous, current = load_manifest(store, FIRST), load_manifest(store, SECOND)
    fast = list(diff_snapshots(store, previous, current, use_fingerprints=True))
    assert fast == list(diff_snapshots(store, previous, current, use_fingerprints=False)) and len(fast) == 18
    assert "most devices changed" in caplog.text


def test_a_fingerprints_record_whose_settings_do_not_match_its_digest_is_not_trusted():
    """The record's settings are used only when its digest vouches for them: a record edited or written
    otherwise (ignored fields that are not the ones it was cut with) means no fingerprints, so rows are compared."""
    settings = fingerprints.FingerprintSettings(fingerprints.FINGERPRINT_FORMAT, ("general.time_since_boot",))
    record = {"format": settings.format, "ignored_fields": list(settings.ignored_fields),
              "settings_digest": settings.digest}
    assert fingerprints.FingerprintSettings.of_manifest(Manifest({"fingerprints": record})) == settings
    widened = {**record, "ignored_fields": ["general.time_since_boot", "filevault.*"]}
    assert fingerprints.FingerprintSettings.of_manifest(Manifest({"fingerprints": widened})) is None
