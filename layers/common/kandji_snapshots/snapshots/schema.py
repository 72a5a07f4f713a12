"""The snapshot tables' columns and their types: one declaration that drives
normalization (what the collector writes), the Glue tables (what Athena reads)
and the schema guard (the test that keeps the two in step).

Types mirror Hive's. Two logical types are stored as Hive strings:
`TIMESTAMP` (ISO 8601 UTC text, parsed in SQL with `from_iso8601_timestamp`) and
`JSON` (a JSON document as text, for sections whose shape differs per platform).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scalar:
    name: str  # string | boolean | bigint | double | timestamp | json

    def hive(self) -> str:
        return "string" if self.name in ("timestamp", "json") else self.name


@dataclass(frozen=True)
class Array:
    item: "Type"

    def hive(self) -> str:
        return f"array<{self.item.hive()}>"


@dataclass(frozen=True)
class Struct:
    fields: dict[str, "Type"] = field(hash=False)

    def hive(self) -> str:
        return "struct<" + ",".join(f"{name}:{kind.hive()}" for name, kind in self.fields.items()) + ">"


Type = Scalar | Array | Struct


def spell(kind: Type, scalars: dict[str, str], array: str, struct: str, field: str, separator: str) -> str:
    """`kind` in an engine's own words: `scalars` by name, `array` and `struct` templates around the item or
    the fields (each `field` from {name} and {type}), e.g. Presto's row(a varchar,b bigint)."""
    if isinstance(kind, Scalar):
        return scalars[kind.name]
    if isinstance(kind, Array):
        return array.format(spell(kind.item, scalars, array, struct, field, separator))
    return struct.format(separator.join(field.format(name=name, type=spell(item, scalars, array, struct, field,
                                                                               separator))
                                        for name, item in kind.fields.items()))

STRING = Scalar("string")
BOOLEAN = Scalar("boolean")
BIGINT = Scalar("bigint")
DOUBLE = Scalar("double")
TIMESTAMP = Scalar("timestamp")
JSON = Scalar("json")


def struct(**fields: Type) -> Struct:
    return Struct(dict(fields))


def strings(*names: str) -> dict[str, Type]:
    return {name: STRING for name in names}


def booleans(*names: str) -> dict[str, Type]:
    return {name: BOOLEAN for name in names}


# Every row of every table starts with these, so a query can pick one snapshot.
KEY_COLUMNS: dict[str, Type] = {"snapshot_id": STRING, "device_id": STRING}

USER = struct(email=STRING, name=STRING, id=STRING, is_archived=BOOLEAN)

DEVICES: dict[str, Type] = {
    **KEY_COLUMNS,
    **strings("device_name", "model", "serial_number", "platform", "os_version",
              "supplemental_build_version", "supplemental_os_version_extra"),
    "last_check_in": TIMESTAMP,
    "user": USER,
    **strings("asset_tag", "blueprint_id", "blueprint_name"),
    **booleans("mdm_enabled", "agent_installed", "is_missing", "is_removed"),
    "agent_version": STRING,
    "first_enrollment": TIMESTAMP,
    "last_enrollment": TIMESTAMP,
    "lost_mode_status": STRING,
    "tags": Array(STRING),
    # Fields Kandji adds later land here as JSON, so nothing is lost and no type clashes.
    "extra": JSON,
}

DEVICE_DETAILS: dict[str, Type] = {
    **KEY_COLUMNS,
    "fetched_at": TIMESTAMP,
    "general": struct(
        **strings("device_id", "device_name", "model", "platform", "os_version",
                  "system_version", "supplemental_build_version", "supplemental_os_version_extra",
                  "boot_volume", "time_since_boot", "last_user", "asset_tag"),
        assigned_user=USER,
        **strings("blueprint_name", "blueprint_uuid"),
        first_enrollment=TIMESTAMP,
        last_enrollment=TIMESTAMP,
    ),
    "mdm": struct(
        **booleans("mdm_enabled", "supervised"),
        install_date=TIMESTAMP,
        last_check_in=TIMESTAMP,
        mdm_enabled_user=Array(STRING),  # user names, a list
    ),
    "activation_lock": struct(**booleans("bypass_code_failed", "user_activation_lock_enabled",
                                         "device_activation_lock_enabled", "activation_lock_allowed_while_supervised",
                                         "activation_lock_supported")),
    "filevault": struct(
        filevault_enabled=BOOLEAN,
        filevault_recoverykey_type=STRING,
        filevault_prk_escrowed=BOOLEAN,
        filevault_next_rotation=TIMESTAMP,
        filevault_regen_required=BOOLEAN,
    ),
    # {} until lost mode is first used (then null here); AppleTV has no such section.
    "lost_mode": struct(
        **strings("lost_mode_status", "enabled_by"),
        enable_status_at=TIMESTAMP,
        **strings("disable_status", "disabled_by"),
        disable_status_at=TIMESTAMP,
        **strings("lock_screen_message", "lock_screen_phone_number", "lock_screen_footnote",
                  "last_location_status"),
        last_location_status_at=TIMESTAMP,
        last_location=struct(latitude=DOUBLE, longitude=DOUBLE),  # strings in the API
        last_location_at=TIMESTAMP,
        sound_status=STRING,
        sound_status_at=TIMESTAMP,
    ),
    "automated_device_enrollment": struct(**booleans("auto_enroll_eligible", "auto_enrolled")),
    "kandji_agent": struct(
        agent_installed=BOOLEAN,
        install_date=TIMESTAMP,
        last_check_in=TIMESTAMP,
        agent_version=STRING,
    ),
    "hardware_overview": struct(
        **strings("model_name", "model_identifier", "processor_name", "processor_speed",
                  "number_of_processors", "total_number_of_cores", "memory", "udid",
                  "uuid", "serial_number", "battery_health"),
    ),
    "volumes": Array(struct(
        **strings("name", "format", "identifier", "percent_used", "capacity", "available"),
        encrypted=BOOLEAN,
    )),
    "network": struct(**strings("local_hostname", "mac_address", "ip_address", "public_ip")),
    "recovery_information": struct(
        **booleans("recovery_lock_enabled", "firmware_password_exist", "firmware_password_pending"),
        password_rotation_scheduled=TIMESTAMP,
        **booleans("password_escrowed", "password_has_been_set"),  # password_has_been_set: newer tenants only
    ),
    # Long lists whose entries differ by platform and tenant age: kept whole, as JSON text.
    "users": JSON,
    "installed_profiles": JSON,
    "apple_business_manager": struct(
        **strings("model", "color", "description", "serial_number", "device_family", "os",
                  "device_assigned_by"),
        device_assigned_date=TIMESTAMP,
    ),
    # On a Mac only remote_desktop_enabled (SIP, firewall, Gatekeeper are Prism categories).
    "security_information": struct(remote_desktop_enabled=BOOLEAN),
    "cellular": struct(
        **booleans("voice_roaming", "data_roaming"),
        cellular_technology=BIGINT,
        subscriptions=JSON,  # a list whose entries are not documented
    ),
    "tags": Array(STRING),
    "extra": JSON,
}

DEVICE_APPS: dict[str, Type] = {
    **KEY_COLUMNS,
    "fetched_at": TIMESTAMP,
    **strings("app_id", "app_name", "bundle_id", "bundle_size"),
    **booleans("app_store_vendable", "device_based_vpp"),
    **strings("source", "process", "signature"),
    "creation_date": TIMESTAMP,
    "modification_date": TIMESTAMP,
    **strings("path", "version"),
    "extra": JSON,
}

# --- device_posture: Prism's security categories, one row per device per snapshot -------------------
# One struct per category, with the columns Prism's rows carry (confirmed from integrations that read
# them; see collect/posture.py). A struct is null when the category was not read this run (no
# permission) and never was, or the device never had a row (Prism covers Macs only for most of them).
# `last_collected_at` is when the device last reported that category to Kandji.
POSTURE_CATEGORY_COLUMNS: dict[str, dict[str, Type]] = {
    "device_information": {
        **strings("device_family", "model_name", "model_identifier", "os_version", "os_build",
                  "display_os_version", "host_name", "local_hostname"),
        "apple_silicon": BOOLEAN,
        "device_capacity": DOUBLE,
        "last_collected_at": TIMESTAMP,
    },
    "filevault": {
        "status": BOOLEAN,
        "key_type": STRING,
        "key_escrowed": BOOLEAN,
        "regeneration_needed": BOOLEAN,
        "scheduled_key_rotation": TIMESTAMP,
        "last_collected_at": TIMESTAMP,
    },
    "application_firewall": {
        **booleans("status", "block_all_incoming", "stealth_mode", "allow_signed_applications", "logging"),
        "logging_option": STRING,
        "version": STRING,
        "unloading": BOOLEAN,
        "last_collected_at": TIMESTAMP,
    },
    "gatekeeper_and_xprotect": {
        **booleans("gatekeeper_status", "trusted_developers"),
        **strings("gatekeeper_version", "gatekeeper_opaque_version", "xprotect_version",
                  "malware_removal_tool_version"),
        "last_collected_at": TIMESTAMP,
    },
    "startup_settings": {
        **booleans("sip", "ssv"),
        **strings("secure_boot_level", "external_boot_level"),
        **booleans("bootstrap_token_auth", "bootstrap_token_escrowed", "kext_requires_bst",
                   "software_update_requires_bst", "any_signed_os", "mdm_manages_kext", "user_manages_kext"),
        "last_collected_at": TIMESTAMP,
    },
    "activation_lock": {
        **booleans("activation_lock_enabled", "device_activation_lock_enabled", "user_activation_lock_enabled",
                   "activation_lock_allowed_while_supervised", "activation_lock_supported", "bypass_code_failed"),
        "last_collected_at": TIMESTAMP,
    },
}

DEVICE_POSTURE: dict[str, Type] = {
    **KEY_COLUMNS,
    "fetched_at": TIMESTAMP,  # when this run read Prism
    **{category: struct(**columns) for category, columns in POSTURE_CATEGORY_COLUMNS.items()},
    # A category this run could not read (failed, refused, out of budget) or that had no row for the
    # device keeps what the last read said, carried like a skipped device's details: per carried
    # category, the end of the run that read it (null when every category was read this run).
    # See collect/posture.py.
    "carried_from": struct(**{category: TIMESTAMP for category in POSTURE_CATEGORY_COLUMNS}),
    "extra": JSON,
}

# One row per committed snapshot (snapshots/committed.py), written after its manifest: Athena's
# views and queries join it, so they never read a snapshot whose manifest was not written.
COMMITTED_SNAPSHOTS: dict[str, Type] = {
    "snapshot_id": STRING,
    "committed_at": TIMESTAMP,  # when the run finished and wrote its manifest (the manifest's finished_at)
    "previous_snapshot_id": STRING,
    "device_count": BIGINT,
    # The tenant-wide tables (tenant_schema.TENANT_TABLES) whose source the run read, zero rows or more: a
    # table's latest rows are those of the latest snapshot listing it. NULL in rows written before it existed.
    "tenant_sources_read": Array(STRING),
}

TABLES: dict[str, dict[str, Type]] = {
    "devices": DEVICES,
    "device_details": DEVICE_DETAILS,
    "device_apps": DEVICE_APPS,
    "device_posture": DEVICE_POSTURE,
}

