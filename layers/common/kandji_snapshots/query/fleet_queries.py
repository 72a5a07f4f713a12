"""The fleet questions, each as Athena SQL and as its DuckDB counterpart, side by side.

This module is the one place where the SQL lives:

* `template.yaml` holds one `AWS::Athena::NamedQuery` per query here, whose
  `Name`, `Description` and `QueryString` equal `title`, `description` and
  `athena_sql` (tests/test_athena_template.py fails if they drift apart);
* `local_query` runs `duckdb_sql` over a local snapshot folder.

Tables (Glue in Athena, views in DuckDB): `devices`, `device_details`,
`device_apps`, `device_posture` (columns: `schema.TABLES`) and `changes` (columns: `CHANGES`
below), each partitioned by `dt` (`YYYY-MM-DD`, the UTC day of the snapshot).

"Latest" means the greatest `snapshot_id` of the latest `dt` partition. In
Athena every query filters on `dt`, so it reads only the days it asks for: the
latest snapshot is looked for in the last three days (today and the two days
before, UTC), and the change queries read the days of their window. DuckDB reads
a local folder: its latest snapshot is simply the newest one in the folder.

Timestamps are stored as ISO 8601 UTC text (`2026-11-23T10:15:00.123456Z`):
Athena parses them with `from_iso8601_timestamp`; `local_query` defines a DuckDB
macro of the same name (returning a UTC `TIMESTAMP`). A snapshot id
(`20261123T101500Z`) is the UTC time the snapshot started.

Placeholders: Athena named queries cannot take parameters, so the Athena SQL
carries an example value to edit ('com.google.Chrome', 'C02XXXXXXXXX'); the
DuckDB SQL takes the same value as a named parameter (`$bundle_id`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kandji_snapshots.snapshots import schema
from kandji_snapshots.snapshots.schema import BIGINT, BOOLEAN, STRING, Array, Type, struct

# The change events the differ writes to changes/dt=YYYY-MM-DD/<snapshot_id>.json.gz, one
# JSON object per line. Fields an event type does not use are absent (read as NULL).
# `before`/`after` are declared string: Athena's OpenX SerDe reads any JSON scalar into a
# string column as its text (true -> 'true', 12 -> '12'), and so does DuckDB.
CHANGES: dict[str, Type] = {
    "schema_version": BIGINT,
    "event_id": STRING,
    "change_type": STRING,  # device_added | device_removed | device_changed | device_apps_first_read | app_*
    "severity": STRING,  # high | info
    "snapshot_id": STRING,
    "previous_snapshot_id": STRING,
    "device_id": STRING,
    "device_name": STRING,
    "serial_number": STRING,
    "platform": STRING,
    "user": struct(email=STRING, name=STRING),  # the device's assigned user; NULL when it has none
    # device_changed: one item per changed field, with its own severity and the rule that set it.
    # (The Athena change history query UNNESTs these five fields by position: keep them in step.)
    "changes": Array(struct(field=STRING, before=STRING, after=STRING, severity=STRING, reason=STRING)),
    "app": struct(app_name=STRING, bundle_id=STRING, path=STRING, version=STRING,
                  previous_version=STRING),  # app_* events
    "apps": Array(struct(app_name=STRING, bundle_id=STRING, version=STRING, path=STRING)),  # device_added/removed
    "truncated": BOOLEAN,
}

# Every table Athena and DuckDB know, with its columns (the `dt` partition comes on top).
TABLE_COLUMNS: dict[str, dict[str, Type]] = {**schema.TABLES, "changes": CHANGES}
# Where each table's files live, below the bucket (Athena) or the local folder (DuckDB).
TABLE_PREFIXES: dict[str, str] = {
    **{table: f"snapshots/{table}/" for table in schema.TABLES},
    "changes": "changes/",
}
PARTITION_KEY = "dt"


def hive_columns(table: str) -> dict[str, str]:
    """Column name -> Hive type of any of the four tables, as its Glue table declares it."""
    return {name: kind.hive() for name, kind in TABLE_COLUMNS[table].items()}


@dataclass(frozen=True)
class QueryParameter:
    name: str  # DuckDB: `$name`
    default: str  # the example value
    athena_placeholder: str  # the text to edit in the Athena SQL


@dataclass(frozen=True)
class FleetQuery:
    name: str  # identifier: local_query.run_query(name, ...)
    title: str  # the Athena named query's Name
    description: str  # the Athena named query's Description
    athena_sql: str
    duckdb_sql: str
    parameters: tuple[QueryParameter, ...] = field(default=())

    def defaults(self) -> dict[str, str]:
        return {parameter.name: parameter.default for parameter in self.parameters}


# --- shared fragments --------------------------------------------------------------
# Athena: the newest snapshot among the last three days' partitions of `devices` (small).
_RECENT = "CAST(current_date - INTERVAL '2' DAY AS varchar)"
_ATHENA_LATEST = f"""WITH latest AS (
    SELECT max(dt) AS dt, max(snapshot_id) AS snapshot_id
    FROM devices
    WHERE dt >= {_RECENT}
)"""
_DUCKDB_LATEST = """WITH latest AS (
    SELECT max(dt) AS dt, max(snapshot_id) AS snapshot_id
    FROM devices
)"""
_ATHENA_DETECTED_AT = "with_timezone(date_parse(c.snapshot_id, '%Y%m%dT%H%i%sZ'), 'UTC')"
_DUCKDB_DETECTED_AT = "strptime(c.snapshot_id, '%Y%m%dT%H%M%SZ')"

CHROME = QueryParameter("bundle_id", "com.google.Chrome", "'com.google.Chrome'")
SERIAL = QueryParameter("serial_number", "C02XXXXXXXXX", "'C02XXXXXXXXX'")
STALE_DAYS = QueryParameter("days", "14", "INTERVAL '14' DAY")


QUERIES: tuple[FleetQuery, ...] = (
    FleetQuery(
        name="latest_inventory",
        title="Kandji: latest inventory",
        description="Every device of the latest snapshot, every platform (Mac, iPhone, iPad, AppleTV, "
                    "Windows, Android): identity, OS and build, user, blueprint, MDM/agent state and last "
                    "check-in.",
        athena_sql=f"""{_ATHENA_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d.platform,
    d.model,
    d.os_version,
    d.supplemental_build_version,
    d."user".email AS user_email,
    d.blueprint_name,
    d.mdm_enabled,
    d.agent_installed,
    d.agent_version,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    d.device_id,
    d.snapshot_id
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
WHERE d.dt >= {_RECENT}
ORDER BY d.platform, d.device_name, d.serial_number""",
        duckdb_sql=f"""{_DUCKDB_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d.platform,
    d.model,
    d.os_version,
    d.supplemental_build_version,
    d."user".email AS user_email,
    d.blueprint_name,
    d.mdm_enabled,
    d.agent_installed,
    d.agent_version,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    d.device_id,
    d.snapshot_id
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
ORDER BY d.platform, d.device_name, d.serial_number""",
    ),
    FleetQuery(
        name="not_checked_in",
        title="Kandji: devices not checked in for 14 days",
        description="Devices of the latest snapshot whose last check-in is more than 14 days ago (or unknown). "
                    "Edit INTERVAL '14' DAY for another threshold.",
        parameters=(STALE_DAYS,),
        athena_sql=f"""{_ATHENA_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d.platform,
    d."user".email AS user_email,
    d.blueprint_name,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    date_diff('day', from_iso8601_timestamp(d.last_check_in), current_timestamp) AS days_since_check_in,
    d.is_missing,
    d.device_id
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
WHERE d.dt >= {_RECENT}
  AND (d.last_check_in IS NULL
       OR from_iso8601_timestamp(d.last_check_in) < current_timestamp - INTERVAL '14' DAY)
ORDER BY d.last_check_in NULLS FIRST, d.device_name""",
        duckdb_sql=f"""{_DUCKDB_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d.platform,
    d."user".email AS user_email,
    d.blueprint_name,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    date_sub('day', from_iso8601_timestamp(d.last_check_in), current_localtimestamp()) AS days_since_check_in,
    d.is_missing,
    d.device_id
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
WHERE d.last_check_in IS NULL
   OR from_iso8601_timestamp(d.last_check_in) < current_localtimestamp() - to_days(CAST($days AS INTEGER))
ORDER BY d.last_check_in NULLS FIRST, d.device_name""",
    ),
    FleetQuery(
        name="filevault_off",
        title="Kandji: Macs with FileVault off",
        description="Macs of the latest snapshot whose FileVault is off, or not reported (filevault_enabled "
                    "NULL), with whether a recovery key is escrowed.",
        athena_sql=f"""{_ATHENA_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d."user".email AS user_email,
    d.os_version,
    d.blueprint_name,
    dd.filevault.filevault_enabled AS filevault_enabled,
    dd.filevault.filevault_prk_escrowed AS recovery_key_escrowed,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    d.device_id
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
JOIN device_details dd ON dd.dt = d.dt AND dd.snapshot_id = d.snapshot_id AND dd.device_id = d.device_id
WHERE d.dt >= {_RECENT}
  AND dd.dt >= {_RECENT}
  AND d.platform = 'Mac'
  AND coalesce(dd.filevault.filevault_enabled, false) = false
ORDER BY d.device_name, d.serial_number""",
        duckdb_sql=f"""{_DUCKDB_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d."user".email AS user_email,
    d.os_version,
    d.blueprint_name,
    dd.filevault.filevault_enabled AS filevault_enabled,
    dd.filevault.filevault_prk_escrowed AS recovery_key_escrowed,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    d.device_id
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
JOIN device_details dd ON dd.dt = d.dt AND dd.snapshot_id = d.snapshot_id AND dd.device_id = d.device_id
WHERE d.platform = 'Mac'
  AND coalesce(dd.filevault.filevault_enabled, false) = false
ORDER BY d.device_name, d.serial_number""",
    ),
    FleetQuery(
        name="agent_missing",
        title="Kandji: Macs without the Kandji agent",
        description="Macs of the latest snapshot on which the Kandji agent is not installed (or not reported).",
        athena_sql=f"""{_ATHENA_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d."user".email AS user_email,
    d.os_version,
    d.blueprint_name,
    d.mdm_enabled,
    d.agent_installed,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    d.device_id
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
WHERE d.dt >= {_RECENT}
  AND d.platform = 'Mac'
  AND coalesce(d.agent_installed, false) = false
ORDER BY d.device_name, d.serial_number""",
        duckdb_sql=f"""{_DUCKDB_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d."user".email AS user_email,
    d.os_version,
    d.blueprint_name,
    d.mdm_enabled,
    d.agent_installed,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    d.device_id
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
WHERE d.platform = 'Mac'
  AND coalesce(d.agent_installed, false) = false
ORDER BY d.device_name, d.serial_number""",
    ),
    FleetQuery(
        name="platform_summary",
        title="Kandji: devices per platform",
        description="The latest snapshot per platform (Windows and Android included): devices, MDM off, "
                    "missing, in lost mode, agent installed, and how many OS versions are in use.",
        athena_sql=f"""{_ATHENA_LATEST}
SELECT
    d.platform,
    count(*) AS device_count,
    count_if(NOT coalesce(d.mdm_enabled, false)) AS mdm_disabled,
    count_if(coalesce(d.is_missing, false)) AS missing,
    count_if(upper(coalesce(d.lost_mode_status, '')) = 'ENABLED') AS in_lost_mode,
    count_if(coalesce(d.agent_installed, false)) AS agent_installed,
    count(DISTINCT d.os_version) AS os_versions
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
WHERE d.dt >= {_RECENT}
GROUP BY d.platform
ORDER BY device_count DESC, d.platform""",
        duckdb_sql=f"""{_DUCKDB_LATEST}
SELECT
    d.platform,
    count(*) AS device_count,
    count_if(NOT coalesce(d.mdm_enabled, false)) AS mdm_disabled,
    count_if(coalesce(d.is_missing, false)) AS missing,
    count_if(upper(coalesce(d.lost_mode_status, '')) = 'ENABLED') AS in_lost_mode,
    count_if(coalesce(d.agent_installed, false)) AS agent_installed,
    count(DISTINCT d.os_version) AS os_versions
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
GROUP BY d.platform
ORDER BY device_count DESC, d.platform""",
    ),
    FleetQuery(
        name="lost_mode_devices",
        title="Kandji: devices in lost mode",
        description="Devices of the latest snapshot in lost mode, on any platform that reports it (the list's "
                    "lost_mode_status or the details' lost_mode section): who enabled it when, and the last "
                    "location reported.",
        athena_sql=f"""{_ATHENA_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d.platform,
    d."user".email AS user_email,
    coalesce(dd.lost_mode.lost_mode_status, d.lost_mode_status) AS lost_mode_status,
    dd.lost_mode.enabled_by AS enabled_by,
    from_iso8601_timestamp(dd.lost_mode.enable_status_at) AS enabled_at,
    dd.lost_mode.lock_screen_phone_number AS lock_screen_phone_number,
    dd.lost_mode.last_location.latitude AS latitude,
    dd.lost_mode.last_location.longitude AS longitude,
    from_iso8601_timestamp(dd.lost_mode.last_location_at) AS located_at,
    d.device_id
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
LEFT JOIN device_details dd ON dd.dt = d.dt AND dd.snapshot_id = d.snapshot_id AND dd.device_id = d.device_id
    AND dd.dt >= {_RECENT}
WHERE d.dt >= {_RECENT}
  AND (upper(coalesce(d.lost_mode_status, '')) = 'ENABLED'
       OR upper(coalesce(dd.lost_mode.lost_mode_status, '')) = 'ENABLED')
ORDER BY d.platform, d.device_name, d.serial_number""",
        duckdb_sql=f"""{_DUCKDB_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d.platform,
    d."user".email AS user_email,
    coalesce(dd.lost_mode.lost_mode_status, d.lost_mode_status) AS lost_mode_status,
    dd.lost_mode.enabled_by AS enabled_by,
    from_iso8601_timestamp(dd.lost_mode.enable_status_at) AS enabled_at,
    dd.lost_mode.lock_screen_phone_number AS lock_screen_phone_number,
    dd.lost_mode.last_location.latitude AS latitude,
    dd.lost_mode.last_location.longitude AS longitude,
    from_iso8601_timestamp(dd.lost_mode.last_location_at) AS located_at,
    d.device_id
FROM devices d
JOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id
LEFT JOIN device_details dd ON dd.dt = d.dt AND dd.snapshot_id = d.snapshot_id AND dd.device_id = d.device_id
WHERE upper(coalesce(d.lost_mode_status, '')) = 'ENABLED'
   OR upper(coalesce(dd.lost_mode.lost_mode_status, '')) = 'ENABLED'
ORDER BY d.platform, d.device_name, d.serial_number""",
    ),
    FleetQuery(
        name="app_inventory",
        title="Kandji: app inventory for one bundle id",
        description="Every install of one app (edit 'com.google.Chrome') in the latest snapshot: device, "
                    "version and path (a device may hold several copies).",
        parameters=(CHROME,),
        athena_sql=f"""{_ATHENA_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d.platform,
    a.app_name,
    a.version,
    a.path,
    a.source,
    from_iso8601_timestamp(a.modification_date) AS modified_at,
    a.device_id
FROM device_apps a
JOIN latest l ON a.dt = l.dt AND a.snapshot_id = l.snapshot_id
JOIN devices d ON d.dt = a.dt AND d.snapshot_id = a.snapshot_id AND d.device_id = a.device_id
WHERE a.dt >= {_RECENT}
  AND d.dt >= {_RECENT}
  AND a.bundle_id = 'com.google.Chrome'
ORDER BY a.version DESC, d.device_name, a.path""",
        duckdb_sql=f"""{_DUCKDB_LATEST}
SELECT
    d.device_name,
    d.serial_number,
    d.platform,
    a.app_name,
    a.version,
    a.path,
    a.source,
    from_iso8601_timestamp(a.modification_date) AS modified_at,
    a.device_id
FROM device_apps a
JOIN latest l ON a.dt = l.dt AND a.snapshot_id = l.snapshot_id
JOIN devices d ON d.dt = a.dt AND d.snapshot_id = a.snapshot_id AND d.device_id = a.device_id
WHERE a.bundle_id = $bundle_id
ORDER BY a.version DESC, d.device_name, a.path""",
    ),
    FleetQuery(
        name="app_version_spread",
        title="Kandji: version spread for one bundle id",
        description="How many devices run each version of one app (edit 'com.google.Chrome') in the latest "
                    "snapshot; installs counts every copy.",
        parameters=(CHROME,),
        athena_sql=f"""{_ATHENA_LATEST}
SELECT
    a.version,
    count(DISTINCT a.device_id) AS device_count,
    count(*) AS install_count
FROM device_apps a
JOIN latest l ON a.dt = l.dt AND a.snapshot_id = l.snapshot_id
WHERE a.dt >= {_RECENT}
  AND a.bundle_id = 'com.google.Chrome'
GROUP BY a.version
ORDER BY device_count DESC, a.version DESC""",
        duckdb_sql=f"""{_DUCKDB_LATEST}
SELECT
    a.version,
    count(DISTINCT a.device_id) AS device_count,
    count(*) AS install_count
FROM device_apps a
JOIN latest l ON a.dt = l.dt AND a.snapshot_id = l.snapshot_id
WHERE a.bundle_id = $bundle_id
GROUP BY a.version
ORDER BY device_count DESC, a.version DESC""",
    ),
    FleetQuery(
        name="device_change_history",
        title="Kandji: change history of one device",
        description="Every change recorded for one device (edit 'C02XXXXXXXXX') over the last 90 days, one "
                    "row per changed field; app events show the app and its versions.",
        parameters=(SERIAL,),
        athena_sql=f"""SELECT
    {_ATHENA_DETECTED_AT} AS detected_at,
    c.change_type,
    c.severity,
    c.device_name,
    c.platform,
    t.change_field,
    t.value_before,
    t.value_after,
    t.change_severity,
    t.change_reason,
    c.app.app_name AS app_name,
    c.app.bundle_id AS bundle_id,
    c.app.previous_version AS previous_version,
    c.app.version AS version,
    c.snapshot_id,
    c.event_id
FROM changes c
LEFT JOIN UNNEST(c.changes) AS t(change_field, value_before, value_after, change_severity, change_reason) ON true
WHERE c.dt >= CAST(current_date - INTERVAL '90' DAY AS varchar)
  AND c.serial_number = 'C02XXXXXXXXX'
ORDER BY c.snapshot_id, c.event_id, t.change_field""",
        duckdb_sql=f"""SELECT
    {_DUCKDB_DETECTED_AT} AS detected_at,
    c.change_type,
    c.severity,
    c.device_name,
    c.platform,
    t.ch.field AS change_field,
    t.ch.before AS value_before,
    t.ch.after AS value_after,
    t.ch.severity AS change_severity,
    t.ch.reason AS change_reason,
    c.app.app_name AS app_name,
    c.app.bundle_id AS bundle_id,
    c.app.previous_version AS previous_version,
    c.app.version AS version,
    c.snapshot_id,
    c.event_id
FROM changes c
LEFT JOIN LATERAL (SELECT unnest(c.changes) AS ch) t ON true
WHERE c.dt >= strftime(current_date - INTERVAL 90 DAY, '%Y-%m-%d')
  AND c.serial_number = $serial_number
ORDER BY c.snapshot_id, c.event_id, change_field""",
    ),
    FleetQuery(
        name="high_severity_changes",
        title="Kandji: high-severity changes of the last 7 days",
        description="Security-relevant changes (severity high) detected in the last 7 days, newest first: "
                    "removed devices, FileVault or agent turned off, lost mode, recovery lock or activation lock "
                    "changes, OS downgrades, on every platform.",
        athena_sql=f"""SELECT
    {_ATHENA_DETECTED_AT} AS detected_at,
    c.change_type,
    c.device_name,
    c.serial_number,
    c.platform,
    array_join(transform(c.changes, x -> concat(x.field, ': ', coalesce(x.before, 'null'), ' -> ',
                                                coalesce(x.after, 'null'))), '; ') AS changed_fields,
    nullif(array_join(transform(c.changes, x -> x.reason), '; '), '') AS reasons,
    c.app.bundle_id AS bundle_id,
    c.app.previous_version AS previous_version,
    c.app.version AS version,
    cardinality(c.apps) AS app_count,
    c.snapshot_id,
    c.event_id
FROM changes c
WHERE c.dt >= CAST(current_date - INTERVAL '7' DAY AS varchar)
  AND c.severity = 'high'
  AND {_ATHENA_DETECTED_AT} >= current_timestamp - INTERVAL '7' DAY
ORDER BY c.snapshot_id DESC, c.event_id""",
        duckdb_sql=f"""SELECT
    {_DUCKDB_DETECTED_AT} AS detected_at,
    c.change_type,
    c.device_name,
    c.serial_number,
    c.platform,
    array_to_string(list_transform(c.changes, lambda x: concat(x.field, ': ', coalesce(x.before, 'null'), ' -> ',
                                                               coalesce(x.after, 'null'))), '; ') AS changed_fields,
    nullif(array_to_string(list_transform(c.changes, lambda x: x.reason), '; '), '') AS reasons,
    c.app.bundle_id AS bundle_id,
    c.app.previous_version AS previous_version,
    c.app.version AS version,
    len(c.apps) AS app_count,
    c.snapshot_id,
    c.event_id
FROM changes c
WHERE c.severity = 'high'
  AND {_DUCKDB_DETECTED_AT} >= current_localtimestamp() - INTERVAL 7 DAY
ORDER BY c.snapshot_id DESC, c.event_id""",
    ),
)

# --- Prism posture (device_posture: one row per device per snapshot, a struct per category) -------
def _posture_off(column: str, title: str, description: str, name: str) -> FleetQuery:
    """Devices of the latest snapshot whose posture `column` (`category.field`) is false."""
    category = column.split(".")[0]
    select = f"""SELECT
    d.device_name,
    d.serial_number,
    d.platform,
    d."user".email AS user_email,
    d.blueprint_name,
    from_iso8601_timestamp(p.{category}.last_collected_at) AS reported_at,
    d.device_id,
    p.snapshot_id
FROM device_posture p
JOIN latest l ON p.dt = l.dt AND p.snapshot_id = l.snapshot_id
JOIN devices d ON d.dt = p.dt AND d.snapshot_id = p.snapshot_id AND d.device_id = p.device_id"""
    return FleetQuery(
        name=name, title=title, description=description,
        athena_sql=f"""{_ATHENA_LATEST}
{select}
WHERE p.dt >= {_RECENT}
  AND d.dt >= {_RECENT}
  AND p.{column} = false
ORDER BY d.device_name, d.serial_number""",
        duckdb_sql=f"""{_DUCKDB_LATEST}
{select}
WHERE p.{column} = false
ORDER BY d.device_name, d.serial_number""",
    )


_POSTURE_FIELDS = "(t.change_field LIKE 'posture.%' OR t.change_field = 'filevault.filevault_enabled')"

POSTURE_QUERIES: tuple[FleetQuery, ...] = (
    _posture_off("application_firewall.status", "Kandji: devices with the firewall off",
                 "Macs of the latest snapshot whose application firewall is off, as Prism reported it "
                 "(device_posture.application_firewall), with when the device last reported it.",
                 "firewall_off"),
    _posture_off("startup_settings.sip", "Kandji: devices with SIP disabled",
                 "Macs of the latest snapshot with System Integrity Protection disabled, as Prism reported it "
                 "(device_posture.startup_settings), with when the device last reported it.",
                 "sip_disabled"),
    FleetQuery(
        name="posture_changes",
        title="Kandji: posture changes of the last 7 days",
        description="Every change to a device's security posture detected in the last 7 days (firewall, "
                    "Gatekeeper, XProtect, SIP, secure boot, activation lock, FileVault), newest first.",
        athena_sql=f"""SELECT
    {_ATHENA_DETECTED_AT} AS detected_at,
    c.device_name,
    c.serial_number,
    c.platform,
    t.change_field,
    t.value_before,
    t.value_after,
    t.change_severity,
    t.change_reason,
    c.snapshot_id,
    c.event_id
FROM changes c
CROSS JOIN UNNEST(c.changes) AS t(change_field, value_before, value_after, change_severity, change_reason)
WHERE c.dt >= CAST(current_date - INTERVAL '7' DAY AS varchar)
  AND c.change_type = 'device_changed'
  AND {_POSTURE_FIELDS}
  AND {_ATHENA_DETECTED_AT} >= current_timestamp - INTERVAL '7' DAY
ORDER BY c.snapshot_id DESC, c.event_id, t.change_field""",
        duckdb_sql=f"""SELECT
    {_DUCKDB_DETECTED_AT} AS detected_at,
    c.device_name,
    c.serial_number,
    c.platform,
    t.ch.field AS change_field,
    t.ch.before AS value_before,
    t.ch.after AS value_after,
    t.ch.severity AS change_severity,
    t.ch.reason AS change_reason,
    c.snapshot_id,
    c.event_id
FROM changes c
JOIN LATERAL (SELECT unnest(c.changes) AS ch) t ON true
WHERE c.change_type = 'device_changed'
  AND (t.ch.field LIKE 'posture.%' OR t.ch.field = 'filevault.filevault_enabled')
  AND {_DUCKDB_DETECTED_AT} >= current_localtimestamp() - INTERVAL 7 DAY
ORDER BY c.snapshot_id DESC, c.event_id, change_field""",
    ),
)
QUERIES += POSTURE_QUERIES

_BY_NAME = {query.name: query for query in QUERIES}


def by_name(name: str) -> FleetQuery:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no fleet query {name!r}; known: {', '.join(_BY_NAME)}") from None
