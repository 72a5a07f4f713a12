import json

import pytest

from kandji_snapshots.snapshots import schema
from kandji_snapshots.snapshots.normalize import app_rows, coerce, details_row, device_row, encode_row
from kandji_snapshots.snapshots.timeutil import normalize_timestamp


@pytest.mark.parametrize("raw, expected", [
    ("2024-07-23T14:11:37.150080Z", "2024-07-23T14:11:37.150080Z"),
    ("2024-01-26 16:15:36.087016+00:00", "2024-01-26T16:15:36.087016Z"),
    ("2024-06-17 11:32:35+00:00", "2024-06-17T11:32:35.000000Z"),
    ("2024-05-13 20:09:23 +0000", "2024-05-13T20:09:23.000000Z"),
    ("2021-05-11T19:45:19Z", "2021-05-11T19:45:19.000000Z"),
    ("2024-05-13 20:09:23 -0130", "2024-05-13T21:39:23.000000Z"),
    ("", None), (None, None), ("1 month ago", None), ("2024-02-30 10:00:00", None),
])
def test_every_timestamp_form_becomes_iso_utc(raw, expected):
    assert normalize_timestamp(raw) == expected


def test_device_row_types_are_stable_across_quirks():
    raw = {"device_id": "d1", "device_name": "Ada's Mac", "user": "", "mdm_enabled": True,
           "last_check_in": "2024-05-13 20:09:23 +0000", "first_enrollment": "", "tags": ["exec"],
           "asset_tag": "", "brand_new_field": {"x": 1}}
    row = device_row(raw, "20261123T100000Z")
    assert row["snapshot_id"] == "20261123T100000Z" and row["device_id"] == "d1"
    assert row["user"] is None  # `user: ""` is unassigned, not a string
    assert row["last_check_in"] == "2024-05-13T20:09:23.000000Z"
    assert row["first_enrollment"] is None and row["asset_tag"] is None
    assert json.loads(row["extra"]) == {"brand_new_field": {"x": 1}}  # kept, not dropped
    assert list(row) == list(schema.DEVICES)  # every column, in schema order


def test_user_id_is_a_string_whether_integer_or_uuid():
    old = device_row({"device_id": "d", "user": {"id": 42, "email": "a@b.c", "is_archived": False}}, "S")
    new = device_row({"device_id": "d", "user": {"id": "5b1c-uuid", "email": "a@b.c"}}, "S")
    assert old["user"]["id"] == "42" and new["user"]["id"] == "5b1c-uuid"
    assert old["user"]["is_archived"] is False and new["user"]["is_archived"] is None


def test_details_string_booleans_and_missing_sections():
    raw = {
        "mdm": {"mdm_enabled": "True", "supervised": "False", "install_date": "2024-06-17 11:32:35+00:00"},
        "kandji_agent": {"agent_installed": "True", "agent_version": "4.2"},
        "volumes": [{"name": "Macintosh HD", "encrypted": "Yes", "percent_used": "19%"},
                    {"name": "Data", "encrypted": ""}],
        "general": {"assigned_user": "", "time_since_boot": "1 month ago"},
        "network": {},
        "lost_mode": {},
        "users": {"regular_users": [{"username": "ada", "admin": "Yes"}], "system_users": []},
        "filevault": {"filevault_enabled": None},
    }
    row = details_row(raw, "S", "d1", "2026-11-23T10:00:00.000000Z")
    assert row["mdm"] == {"mdm_enabled": True, "supervised": False,
                          "install_date": "2024-06-17T11:32:35.000000Z", "last_check_in": None,
                          "mdm_enabled_user": None}
    assert row["kandji_agent"]["agent_installed"] is True
    assert [volume["name"] for volume in row["volumes"]] == ["Data", "Macintosh HD"]  # a set: sorted by name
    assert row["volumes"][1]["encrypted"] is True and row["volumes"][0]["encrypted"] is None
    assert row["general"]["assigned_user"] is None
    assert row["general"]["time_since_boot"] == "1 month ago"
    assert row["network"] is None and row["lost_mode"] is None and row["hardware_overview"] is None
    assert json.loads(row["users"])["regular_users"][0]["admin"] == "Yes"  # JSON text: shape varies
    assert row["filevault"]["filevault_enabled"] is None
    assert row["extra"] is None


# A real Mac's sections, key for key as the shared notes record them (values made up).
REAL_MAC_DETAILS = {
    "general": {"device_id": "d1", "os_version": "14.6.1", "supplemental_build_version": "23G93",
                "supplemental_os_version_extra": "(a)"},
    "mdm": {"mdm_enabled": "True", "supervised": "True", "install_date": "2024-06-17 11:32:35+00:00",
            "last_check_in": "2024-07-23T14:11:37.150080Z", "mdm_enabled_user": ["Rick & Morty"]},
    "activation_lock": {"bypass_code_failed": False, "user_activation_lock_enabled": False,
                        "device_activation_lock_enabled": True, "activation_lock_allowed_while_supervised": True,
                        "activation_lock_supported": True},
    "filevault": {"filevault_enabled": True, "filevault_recoverykey_type": "Personal",
                  "filevault_prk_escrowed": True, "filevault_next_rotation": "", "filevault_regen_required": False},
    "lost_mode": {"lost_mode_status": "ENABLED", "enabled_by": "admin@example.com",
                  "enable_status_at": "2024-07-20T10:00:00.000000Z", "disable_status": "", "disabled_by": "",
                  "disable_status_at": "", "lock_screen_message": "Lost", "lock_screen_phone_number": "+1 555 0100",
                  "lock_screen_footnote": "", "last_location_status": "ACKNOWLEDGED",
                  "last_location_status_at": "2024-07-23 14:11:37+00:00",
                  "last_location": {"latitude": "37.331686", "longitude": "-122.030656"},
                  "last_location_at": "2024-07-23 14:11:37+00:00", "sound_status": "",
                  "sound_status_at": ""},
    "recovery_information": {"recovery_lock_enabled": True, "firmware_password_exist": False,
                             "firmware_password_pending": False, "password_rotation_scheduled": None,
                             "password_escrowed": True, "password_has_been_set": True},
    "automated_device_enrollment": {"auto_enroll_eligible": True, "auto_enrolled": True},
    "kandji_agent": {"agent_installed": "True", "agent_version": "3.7.2 (2834)"},
    "volumes": [
        {"name": "Macintosh HD", "format": "APFS", "identifier": "disk1s5s1", "capacity": "228.27 GB",
         "available": "180.02 GB", "percent_used": "9%", "encrypted": "No"},
        {"name": "Macintosh HD - Data", "format": "APFS (Encrypted)", "identifier": "disk1s1",
         "capacity": "228.27 GB", "available": "180.02 GB", "percent_used": "19%", "encrypted": "Yes"},
    ],
    "security_information": {"remote_desktop_enabled": False},
    "apple_business_manager": {"model": "MacBookPro18,3", "color": "SPACE GRAY", "description": "MBP 14",
                               "serial_number": "C02X", "device_family": "Mac", "os": "OSX",
                               "device_assigned_by": "a@example.com",
                               "device_assigned_date": "2021-05-11T19:45:19Z"},
    "cellular": {},
}


def test_the_real_keys_of_every_details_section_land_in_typed_columns():
    row = details_row(REAL_MAC_DETAILS, "S", "d1", "2026-11-23T10:00:00.000000Z")
    assert row["extra"] is None  # nothing left over
    assert row["general"]["supplemental_build_version"] == "23G93"
    assert row["general"]["supplemental_os_version_extra"] == "(a)"
    assert row["mdm"]["mdm_enabled_user"] == ["Rick & Morty"]
    lost = row["lost_mode"]
    assert lost["lost_mode_status"] == "ENABLED" and lost["disable_status_at"] is None
    assert lost["last_location"] == {"latitude": 37.331686, "longitude": -122.030656}
    assert lost["last_location_at"] == "2024-07-23T14:11:37.000000Z"
    assert row["recovery_information"] == {
        "recovery_lock_enabled": True, "firmware_password_exist": False, "firmware_password_pending": False,
        "password_rotation_scheduled": None, "password_escrowed": True, "password_has_been_set": True}
    assert row["filevault"]["filevault_next_rotation"] is None
    assert row["filevault"]["filevault_regen_required"] is False
    assert row["activation_lock"]["device_activation_lock_enabled"] is True
    assert row["kandji_agent"]["agent_version"] == "3.7.2 (2834)"
    assert [(v["name"], v["identifier"], v["encrypted"]) for v in row["volumes"]] == [
        ("Macintosh HD", "disk1s5s1", False), ("Macintosh HD - Data", "disk1s1", True)]
    assert row["security_information"] == {"remote_desktop_enabled": False}
    assert row["apple_business_manager"]["device_assigned_date"] == "2021-05-11T19:45:19.000000Z"
    assert row["cellular"] is None


def test_cellular_and_the_new_platforms_empty_or_missing_sections():
    ipad = details_row({"cellular": {"voice_roaming": False, "data_roaming": True, "cellular_technology": 2,
                                     "subscriptions": [{"slot": "one"}]},
                        "volumes": [{"name": "", "format": "APFS", "percent_used": "40%"}]}, "S", "d", "T")
    assert ipad["cellular"] == {"voice_roaming": False, "data_roaming": True, "cellular_technology": 2,
                                "subscriptions": '[{"slot":"one"}]'}
    assert ipad["volumes"] == [{"name": None, "format": "APFS", "identifier": None, "percent_used": "40%",
                                "capacity": None, "available": None, "encrypted": None}]
    windows = details_row({"general": {"platform": "Windows", "os_version": "10.0.22631"}, "mdm": {},
                           "activation_lock": {}, "network": {}, "volumes": [], "filevault": {}},
                          "S", "d", "T")
    assert windows["general"]["platform"] == "Windows" and windows["extra"] is None
    assert all(windows[section] is None for section in ("mdm", "activation_lock", "network", "filevault"))
    tv = details_row({"volumes": [], "network": {}}, "S", "d", "T")  # AppleTV: no lost_mode key at all
    assert tv["volumes"] == [] and tv["network"] is None and tv["lost_mode"] is None


def test_no_value_is_no_value():
    [row] = app_rows([{"app_name": "install_helper", "version": "No value", "path": "/x.app"}], "S", "d", "T")
    assert row["version"] is None and row["extra"] is None


def test_value_that_does_not_fit_its_type_is_kept_in_extra():
    extra = {}
    assert coerce("maybe", schema.BOOLEAN, "mdm.supervised", extra) is None
    assert extra == {"mdm.supervised": "maybe"}


def test_app_rows_are_strings_sorted_by_identity_and_keep_duplicate_copies():
    apps = [
        {"app_name": "Chrome", "bundle_id": "com.google.Chrome", "path": "/Users/a/Applications/Chrome.app",
         "version": "119.0", "app_store_vendable": "False", "creation_date": "2024-05-13 20:09:23 +0000"},
        {"app_name": "Chrome", "bundle_id": "com.google.Chrome", "path": "/Applications/Chrome.app",
         "version": "120.0", "bundle_size": 12345},
        {"app_name": "Tool", "path": "/Applications/Tool.app", "version": ""},
    ]
    rows = app_rows(apps, "S", "d1", "2026-11-23T10:00:00.000000Z")
    assert [row["path"] for row in rows] == ["/Applications/Tool.app", "/Applications/Chrome.app",
                                             "/Users/a/Applications/Chrome.app"]
    assert rows[0]["bundle_id"] is None and rows[0]["version"] is None
    assert rows[1]["bundle_size"] == "12345"
    assert rows[2]["app_store_vendable"] is False
    assert rows[2]["creation_date"] == "2024-05-13T20:09:23.000000Z"


def test_encoding_starts_with_the_keys_so_rows_compare_as_bytes():
    line = encode_row(details_row({}, "20261123T100000Z", "d1", "2026-11-23T10:00:00.000000Z"))
    assert line.startswith(b'{"snapshot_id":"20261123T100000Z","device_id":"d1","fetched_at":')
    assert line.endswith(b"\n")


@pytest.mark.parametrize("raw, expected", [
    ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
    ("0999-12-31 23:59:59 +0000", "0999-12-31T23:59:59.000000Z"),
    ("0001-01-01T00:00:00-01:00", "0001-01-01T01:00:00.000000Z"),
])
def test_years_before_1000_keep_four_digits(raw, expected):
    assert normalize_timestamp(raw) == expected


@pytest.mark.parametrize("raw", ["0001-01-01T00:00:00+01:00", "9999-12-31 23:59:59 -0500"])
def test_a_timestamp_pushed_out_of_range_by_its_offset_is_no_timestamp(raw):
    assert normalize_timestamp(raw) is None


def test_set_like_lists_are_sorted_so_order_alone_changes_no_byte():
    profiles = [{"name": "Wi-Fi", "uuid": "B", "identifier": "com.example.b"}, {"name": "VPN", "uuid": "C"},
                {"name": "Wi-Fi", "uuid": "A", "identifier": "com.example.a"}]
    volumes = [{"name": "Macintosh HD - Data", "identifier": "disk3s5", "available": "10 GB"},
               {"name": "Macintosh HD", "identifier": "disk3s1s1", "available": "11 GB"}]
    raw = {"tags": ["b", "a"], "installed_profiles": profiles, "volumes": volumes,
           "mdm": {"mdm_enabled_user": ["zoe", "ada"]},
           "users": {"regular_users": [{"username": "zoe", "uid": "502"}, {"username": "ada", "uid": "501"}],
                     "system_users": [{"username": "root", "uid": "0"}, {"username": "_lp", "uid": "26"}]}}
    reordered = {**raw, "tags": ["a", "b"], "installed_profiles": profiles[::-1], "volumes": volumes[::-1],
                 "mdm": {"mdm_enabled_user": ["ada", "zoe"]},
                 "users": {key: value[::-1] for key, value in raw["users"].items()}}
    row = details_row(raw, "S", "d1", "2026-11-23T10:00:00.000000Z")
    assert encode_row(row) == encode_row(details_row(reordered, "S", "d1", "2026-11-23T10:00:00.000000Z"))
    assert row["tags"] == ["a", "b"] and [v["name"] for v in row["volumes"]] == ["Macintosh HD", "Macintosh HD - Data"]
    assert [p["uuid"] for p in json.loads(row["installed_profiles"])] == ["C", "A", "B"]  # same name: by identifier
    assert row["mdm"]["mdm_enabled_user"] == ["ada", "zoe"]
    assert [u["username"] for u in json.loads(row["users"])["system_users"]] == ["_lp", "root"]
    assert raw["tags"] == ["b", "a"] and raw["volumes"] is volumes  # the payload itself is left as it was
    assert device_row({"device_id": "d", "tags": ["z", "a"]}, "S")["tags"] == ["a", "z"]


def test_a_volumes_moving_free_space_does_not_move_it_in_the_list():
    def volumes(first_free, second_free):
        return {"volumes": [{"name": "Data", "identifier": "disk1", "available": first_free},
                            {"name": "Data", "identifier": "disk2", "available": second_free}]}
    before = details_row(volumes("9 GB", "1 GB"), "S", "d", None)["volumes"]
    after = details_row(volumes("1 GB", "9 GB"), "S", "d", None)["volumes"]
    assert [v["identifier"] for v in before] == [v["identifier"] for v in after] == ["disk1", "disk2"]
