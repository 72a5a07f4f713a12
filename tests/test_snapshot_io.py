import gzip
import json

import pytest

from kandji_snapshots.snapshots.layout import table_part_key
from kandji_snapshots.snapshots.storage import LocalObjectStore, MemoryObjectStore
from kandji_snapshots.snapshots.table_io import TableWriter, iter_rows

SNAPSHOT = "20261123T100000Z"


def rows(count):
    return [{"snapshot_id": SNAPSHOT, "device_id": f"d{index:04d}"} for index in range(count)]


def writer_of(store, table, count, **options):
    """A TableWriter for `table` that has been given rows(count), not yet closed."""
    writer = TableWriter(store, table, SNAPSHOT, **options)
    for row in rows(count):
        writer.write(row)
    return writer


def test_small_table_is_one_object_without_part_suffix():
    store = MemoryObjectStore()
    result = writer_of(store, "devices", 7, rows_per_part=10).close()
    assert result == {"rows": 7, "keys": ["snapshots/devices/dt=2026-11-23/20261123T100000Z.json.gz"]}
    assert list(iter_rows(store, result["keys"])) == rows(7)


def test_large_table_is_split_in_ordered_parts():
    store = MemoryObjectStore()
    result = writer_of(store, "device_apps", 25, rows_per_part=10).close()
    assert result["keys"] == [table_part_key("device_apps", SNAPSHOT, part) for part in range(3)]
    assert list(iter_rows(store, result["keys"])) == rows(25)
    first = gzip.decompress(store.get(result["keys"][0])).splitlines()
    assert len(first) == 10 and json.loads(first[0])["device_id"] == "d0000"


def test_empty_table_still_has_one_readable_object():
    store = MemoryObjectStore()
    result = TableWriter(store, "device_apps", SNAPSHOT).close()
    assert result["rows"] == 0 and len(result["keys"]) == 1
    assert list(iter_rows(store, result["keys"])) == []


def test_local_store_round_trip_and_listing(tmp_path):
    store = LocalObjectStore(tmp_path)
    keys = writer_of(store, "devices", 3).close()["keys"]
    assert list(store.list_keys("snapshots/devices/")) == keys
    assert (tmp_path / keys[0]).exists()
    assert list(iter_rows(store, keys)) == rows(3)


def test_abort_drops_the_buffer_and_returns_what_was_written():
    store = MemoryObjectStore()
    written = writer_of(store, "device_apps", 25, rows_per_part=10).abort()
    assert written == [table_part_key("device_apps", SNAPSHOT, part) for part in (0, 1)]
    assert sorted(store.objects) == written  # the third, buffered part never reaches the store


def test_rows_out_of_device_id_order_are_refused():
    writer = TableWriter(MemoryObjectStore(), "devices", SNAPSHOT, rows_per_part=10)
    writer.write({"snapshot_id": SNAPSHOT, "device_id": "d0002"})
    writer.write({"snapshot_id": SNAPSHOT, "device_id": "d0002"})  # an equal id is in order (app rows repeat it)
    writer.write_line(b'{"device_id":"d0003"}\n', "d0003")
    with pytest.raises(AssertionError, match="devices rows out of device_id order: d0001 after d0003"):
        writer.write({"snapshot_id": SNAPSHOT, "device_id": "d0001"})
    with pytest.raises(AssertionError, match="out of device_id order"):
        writer.write_line(b'{"device_id":"d0000"}\n', "d0000")
    assert writer.rows == 3


@pytest.mark.parametrize("key", ["../outside.json", "snapshots/../../outside.json", "/etc/passwd",
                                 "snapshots/manifests/../../../outside.json"])
def test_local_store_refuses_keys_that_escape_its_folder(tmp_path, key):
    root = tmp_path / "store"
    store = LocalObjectStore(root)
    for use in (lambda: store.put(key, b"x"), lambda: store.get(key), lambda: store.open(key),
                lambda: store.delete([key])):
        with pytest.raises(ValueError, match="escapes the store's folder"):
            use()
    assert not (tmp_path / "outside.json").exists()
    store.put("snapshots/../inside.json", b"y")  # `..` that stays inside is just a path
    assert (root / "inside.json").read_bytes() == b"y"


def test_create_writes_a_key_only_once(tmp_path):
    for store in (MemoryObjectStore(), LocalObjectStore(tmp_path)):
        assert store.create("changes/_transitions/first.json", b"a") is True
        assert store.create("changes/_transitions/first.json", b"b") is False
        assert store.get("changes/_transitions/first.json") == b"a"
