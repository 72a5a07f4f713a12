"""Rows as flattened fields, one change per array element that comes or goes, and the volatile-value cut."""

from __future__ import annotations

import json

from kandji_snapshots.diff.field_changes import VolatileValues, field_changes, row_fields
from kandji_snapshots.diff.rules import ChangeRules


def details(**columns):
    return {"snapshot_id": "20261123T100000Z", "device_id": "d1", "fetched_at": "2026-11-23T10:00:01.000000Z",
            **columns}


def test_array_elements_are_keyed_by_name_else_by_index():
    fields, elements = row_fields("device_details", details(volumes=[
        {"name": "Data", "format": "APFS"}, {"name": "Data", "format": "HFS"},  # a repeated name: by index
        {"name": "", "format": "ExFAT"}, {"name": 7, "format": "FAT"}, {"name": None, "format": "NTFS"}]))
    assert fields == {"volumes.Data.name": "Data", "volumes.Data.format": "APFS", "volumes.1.name": "Data",
                      "volumes.1.format": "HFS", "volumes.2.format": "ExFAT", "volumes.7.name": 7,
                      "volumes.7.format": "FAT", "volumes.4.format": "NTFS"}
    assert list(elements) == ["volumes.Data", "volumes.1", "volumes.2", "volumes.7", "volumes.4"]


def test_row_fields_leave_out_the_row_keys_and_empty_values_and_parse_json_columns():
    fields, elements = row_fields("device_details", details(
        tags=["eng"], general={"last_user": "ann", "asset_tag": None},
        users=json.dumps({"note": "", "groups": [], "admins": ["ann"]}),
        installed_profiles=json.dumps([{"name": "VPN", "payloads": [{"name": "p1", "type": "vpn"}]}]),
        extra=json.dumps({"battery_cycles": 87})))
    assert fields == {"details.tags": ["eng"], "general.last_user": "ann", "users.admins": ["ann"],
                      "installed_profiles.VPN.name": "VPN", "installed_profiles.VPN.payloads.p1.name": "p1",
                      "installed_profiles.VPN.payloads.p1.type": "vpn", "extra.battery_cycles": 87}
    assert list(elements) == ["installed_profiles.VPN", "installed_profiles.VPN.payloads.p1"]
    assert row_fields("devices", None) == ({}, {})


def test_an_element_that_comes_or_goes_is_one_change_with_the_whole_element():
    profile = {"verified": "verified", "name": "Café VPN", "uuid": "b2"}
    before = details(installed_profiles=json.dumps([{"name": "Wi-Fi", "uuid": "a1"}, profile]))
    after = details(installed_profiles=json.dumps([{"name": "Wi-Fi", "uuid": "a1"}]))
    text = '{"name":"Café VPN","uuid":"b2","verified":"verified"}'  # sorted keys, not \\u-escaped
    assert field_changes(ChangeRules(), "device_details", before, after) == [
        {"field": "installed_profiles.Café VPN", "before": text, "after": None, "severity": "info"}]
    assert field_changes(ChangeRules(), "device_details", after, before) == [
        {"field": "installed_profiles.Café VPN", "before": None, "after": text, "severity": "info"}]
    assert field_changes(ChangeRules(["installed_profiles.*"]), "device_details", before, after) == []


def test_volatile_keys_follow_the_field_names_the_rules_see():
    # Fields without a column are compared one by one as extra.<path>: `extra` ignores them all (the whole
    # column may be cut before comparing), one of them alone does not let the column be cut.
    assert "extra" in VolatileValues.for_table("device_details", ChangeRules(["extra"])).keys
    assert "extra" not in VolatileValues.for_table("device_details", ChangeRules(["extra.battery_cycles"])).keys
    assert "extra" not in VolatileValues.for_table("device_details", ChangeRules()).keys
    # Keys that only occur inside an array of objects.
    keys = VolatileValues.for_table("device_details", ChangeRules(["volumes.*"])).keys
    assert {"capacity", "encrypted", "format", "identifier"} <= set(keys)
    assert VolatileValues.for_table("device_apps", ChangeRules()) is None  # nothing volatile: nothing to cut


def test_strip_cuts_string_and_null_values_of_every_volatile_key_and_nothing_else():
    volatile = VolatileValues(["last_check_in", "available"])
    line = b'{"a":1,"last_check_in":"2026-11-23T10:00:00Z","b":"x","available":null,"c":2,"available":3}\n'
    assert volatile.strip(line, 6) == b',,"b":"x",,"c":2,"available":3}\n'
