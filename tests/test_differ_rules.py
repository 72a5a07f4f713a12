"""diff/rules.py's tables, and the raw-row shortcuts the differ takes on top of them."""

from __future__ import annotations

import pytest
from differ_fixtures import details_payload, device_item

from kandji_snapshots.diff.differ import VolatileValues, field_changes, row_head
from kandji_snapshots.diff.rules import (
    DEFAULT_IGNORED_FIELDS,
    HIGH,
    INFO,
    SEVERITY_RULES,
    ChangeRules,
    build_downgraded,
    downgraded,
    highest,
    lost_mode_enabled,
    parse_ignore_fields,
    version_key,
)
from kandji_snapshots.snapshots.normalize import details_row, device_row, encode_row


def test_check_in_fields_are_ignored_by_default():
    rules = ChangeRules()
    for name in ("last_check_in", "mdm.last_check_in", "kandji_agent.last_check_in", "general.time_since_boot",
                 "volumes.Macintosh HD.available", "volumes.0.percent_used", "fetched_at", "snapshot_id"):
        assert rules.is_ignored(name), name
    for name in ("os_version", "volumes.Macintosh HD.encrypted", "general.os_version", "mdm.mdm_enabled"):
        assert not rules.is_ignored(name), name


def test_ignore_setting_is_comma_separated_patterns_added_to_the_defaults():
    assert parse_ignore_fields(" users.* ,extra,, ") == ("users.*", "extra")
    rules = ChangeRules.from_setting("users.*,installed_profiles.*.verified")
    assert rules.ignored_fields[:len(DEFAULT_IGNORED_FIELDS)] == DEFAULT_IGNORED_FIELDS
    assert rules.is_ignored("users.regular_users.ann.uid") and rules.is_ignored("installed_profiles.VPN.verified")
    assert not rules.is_ignored("installed_profiles.VPN.uuid")


def test_moving_fields_of_a_lost_device_are_ignored_and_its_configuration_is_not():
    rules = ChangeRules()
    for name in ("lost_mode.last_location.latitude", "lost_mode.last_location.longitude",
                 "lost_mode.last_location_at", "lost_mode.last_location_status_at", "lost_mode.sound_status_at",
                 "extra.lost_mode.last_location.latitude", "extra.volumes.0.available", "extra.last_check_in"):
        assert rules.is_ignored(name), name
    for name in ("lost_mode.lost_mode_status", "lost_mode.lock_screen_phone_number", "lost_mode.enabled_by",
                 "extra.security_information.firewall_enabled", "extra.recovery_information.password_escrowed",
                 "recovery_information.recovery_lock_enabled", "activation_lock.device_activation_lock_enabled"):
        assert not rules.is_ignored(name), name


def test_a_pattern_covers_what_lies_below_it_and_reaches_inside_extra():
    rules = ChangeRules(["extra", "users"])
    assert rules.is_ignored("extra.anything.at.all") and rules.is_ignored("users.system_users._lp.uid")
    assert not rules.is_ignored("extras.x") and not rules.is_ignored("users_count")
    rules = ChangeRules(["security_information.*"])
    assert rules.is_ignored("security_information.remote_desktop_enabled")
    assert rules.is_ignored("extra.security_information.firewall_enabled")  # the same path, untyped


@pytest.mark.parametrize(("before", "after", "expected"), [
    ("22631.3880", "22631.3737", True), ("22631.3737", "22631.3880", False), ("22F770820d", "22F82", False),
    ("", "22631.3737", False), (None, "22631.3737", False), ("22631.3737", "", False),
])
def test_builds_compare_only_when_they_are_numbers(before, after, expected):
    assert build_downgraded(before, after) is expected


@pytest.mark.parametrize(("before", "after", "expected"), [
    ("14.5", "14.4.1", True), ("14.10", "14.9", True), ("17.5.1 (21F90)", "17.5", True),
    ("14.4", "14.5", False), ("14.0", "14", False), ("14.5", "14.5", False), (None, "14.5", False),
    ("14.5", "", False), ("beta", "14.5", False),
])
def test_os_versions_compare_as_versions(before, after, expected):
    assert downgraded(before, after) is expected


def test_version_key():
    assert version_key("14.6.1") == (14, 6, 1) and version_key("15.0") == (15,) and version_key("n/a") is None
    assert version_key("14.0.1") == (14, 0, 1) and version_key("0") == (0,) and version_key(None) is None


def test_no_ignore_setting_adds_nothing():
    assert parse_ignore_fields(None) == () and parse_ignore_fields("") == ()


@pytest.mark.parametrize(("before", "after", "expected"), [
    (None, "ENABLED", True), ("", "Enabled", True), ("DISABLED", "enabled", True), ("Disabled", "Pending", True),
    ("ENABLED", "ENABLED", False), ("ENABLED", "", False), (None, "DISABLED", False), (None, "ERROR", False),
])
def test_lost_mode_becoming_enabled(before, after, expected):
    assert lost_mode_enabled(before, after) is expected


# Every field of SEVERITY_RULES: a transition that is high, with its reason, and the way back that is not.
# The last column: the severity when the value was unknown (None) before.
HIGH_TRANSITIONS = [
    ("filevault.filevault_enabled", True, False, "FileVault turned off", INFO),
    ("agent_installed", True, False, "Kandji agent removed", INFO),
    ("kandji_agent.agent_installed", True, False, "Kandji agent removed", INFO),
    ("mdm_enabled", True, False, "MDM disabled", INFO),
    ("mdm.mdm_enabled", True, False, "MDM disabled", INFO),
    ("is_missing", False, True, "device went missing", INFO),
    ("lost_mode_status", "", "ENABLED", "lost mode enabled", HIGH),  # no status yet counts as off
    ("lost_mode.lost_mode_status", "DISABLED", "ENABLED", "lost mode enabled", HIGH),
    ("os_version", "14.5", "14.4.1", "OS downgraded", INFO),
    ("general.os_version", "15.1", "14.7", "OS downgraded", INFO),
    ("supplemental_build_version", "22631.3880", "22631.3737", "OS build downgraded", INFO),
    ("general.supplemental_build_version", "26100.2314", "26100.1742", "OS build downgraded", INFO),
    ("recovery_information.recovery_lock_enabled", True, False, "recovery lock turned off", INFO),
    ("recovery_information.firmware_password_exist", True, False, "firmware password removed", INFO),
    ("activation_lock.bypass_code_failed", False, True, "activation lock bypass code failed", INFO),
    ("posture.filevault.status", True, False, "FileVault turned off", INFO),
    ("posture.application_firewall.status", True, False, "firewall turned off", INFO),
    ("posture.gatekeeper_and_xprotect.gatekeeper_status", True, False, "Gatekeeper disabled", INFO),
    ("posture.gatekeeper_and_xprotect.xprotect_version", "5287", None, "XProtect disabled", INFO),
    ("posture.startup_settings.sip", True, False, "SIP disabled", INFO),
    ("posture.startup_settings.secure_boot_level", "full", "permissive", "secure boot lowered", INFO),
]
# Activation lock is high either way (on or off is a change of who can wipe the device), once reported.
TWO_WAY_TRANSITIONS = [
    ("activation_lock.user_activation_lock_enabled", False, True, "activation lock changed"),
    ("activation_lock.device_activation_lock_enabled", True, False, "activation lock changed"),
    ("activation_lock.activation_lock_allowed_while_supervised", True, False, "activation lock changed"),
    ("posture.activation_lock.activation_lock_enabled", False, True, "activation lock changed"),
    ("posture.activation_lock.device_activation_lock_enabled", True, False, "activation lock changed"),
    ("posture.activation_lock.user_activation_lock_enabled", False, True, "activation lock changed"),
]


@pytest.mark.parametrize(("field", "before", "after", "reason", "from_unknown"), HIGH_TRANSITIONS)
def test_each_severity_rule_is_high_one_way_only(field, before, after, reason, from_unknown):
    assert ChangeRules.assess(field, before, after) == (HIGH, reason)
    assert ChangeRules.assess(field, None, after)[0] == from_unknown
    assert ChangeRules.assess(field, after, before) == (INFO, None)
    assert ChangeRules.assess(field, before, before) == (INFO, None)


@pytest.mark.parametrize(("field", "before", "after", "reason"), TWO_WAY_TRANSITIONS)
def test_activation_lock_changes_are_high_both_ways_once_reported(field, before, after, reason):
    assert ChangeRules.assess(field, before, after) == (HIGH, reason)
    assert ChangeRules.assess(field, after, before) == (HIGH, reason)
    assert ChangeRules.assess(field, None, after) == (INFO, None)  # a section appearing is no change of it
    assert ChangeRules.assess(field, before, before) == (INFO, None)


def test_the_severity_table_has_no_rule_without_a_test():
    assert sorted(field for rule in SEVERITY_RULES for field in rule.fields) == sorted(
        field for field, *_ in HIGH_TRANSITIONS + TWO_WAY_TRANSITIONS)


def test_assess_examples_and_the_highest_severity():
    assert ChangeRules.assess("filevault.filevault_enabled", True, False) == (HIGH, "FileVault turned off")
    assert ChangeRules.assess("filevault.filevault_enabled", None, False) == (INFO, None)
    assert ChangeRules.assess("is_missing", False, True) == (HIGH, "device went missing")
    assert highest([]) == INFO and highest([INFO, HIGH, INFO]) == HIGH


def test_volatile_keys_are_cut_only_where_every_field_with_that_name_is_ignored():
    assert VolatileValues.for_table("devices", ChangeRules()).keys == ("last_check_in",)
    assert VolatileValues.for_table("device_details", ChangeRules()).keys == (
        "available", "last_check_in", "last_location_at", "last_location_status_at", "latitude", "longitude",
        "percent_used", "sound_status_at", "time_since_boot")
    # mdm.install_date and kandji_agent.install_date share a key name: ignoring one is not enough.
    assert "install_date" not in VolatileValues.for_table("device_details", ChangeRules(["mdm.install_date"])).keys
    assert "install_date" in VolatileValues.for_table("device_details", ChangeRules(["*.install_date"])).keys


def test_stripping_removes_only_volatile_values():
    line = encode_row(device_row(device_item("d1"), "20261123T100000Z"))
    device_id, head = row_head(line, False)
    assert device_id == b"d1" and line[:head] == b'{"snapshot_id":"20261123T100000Z","device_id":"d1",'
    stripped = VolatileValues(["last_check_in"]).strip(line, head)
    assert b'"last_check_in":' not in stripped and b'"device_name":"Mac d1"' in stripped


def test_stripping_scans_only_up_to_the_columns_that_hold_no_volatile_key():
    volatile = VolatileValues.for_table("device_details", ChangeRules())
    payload = details_payload("d1")
    line = encode_row(details_row(payload, "S", "d1", "2026-11-23T10:00:01.000000Z"))
    head = row_head(line, True)[1]
    cut = line.index(b',"recovery_information":')
    stripped = volatile.strip(line, head)
    assert stripped.endswith(line[cut:])  # the tail (users JSON text, profiles, ...) is left as it is
    assert b'"time_since_boot"' not in stripped and b'"available"' not in stripped
    # a difference in the tail still makes the rows differ
    payload["recovery_information"]["recovery_lock_enabled"] = False
    other = encode_row(details_row(payload, "S", "d1", "2026-11-23T10:00:01.000000Z"))
    assert volatile.strip(other, head) != stripped
    # ignoring a later field moves the cut behind it
    later = VolatileValues.for_table("device_details", ChangeRules(["apple_business_manager.device_assigned_date"]))
    assert later._tail == b',"security_information":'


def test_row_head_skips_fetched_at_and_handles_escaped_ids():
    line = encode_row(details_row(details_payload('we"ird'), "20261123T100000Z", 'we"ird',
                                  "2026-11-23T10:00:01.000000Z"))
    device_id, head = row_head(line, True)
    assert device_id == b'we\\"ird'
    assert line[head:].startswith(b'"general":')


def test_field_changes_of_rows_missing_on_one_side():
    row = details_row(details_payload("d1"), "s", "d1", "2026-11-23T10:00:01.000000Z")
    changes = field_changes(ChangeRules(), "device_details", None, row)
    assert {"filevault.filevault_enabled", "volumes.Macintosh HD", "installed_profiles.FileVault"} <= {
        change["field"] for change in changes}
