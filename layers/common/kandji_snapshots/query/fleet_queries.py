"""The fleet questions, each written once and spelled out in Athena SQL and in DuckDB SQL.

This module is the one place where the SQL lives:

* `template.yaml` holds one `AWS::Athena::NamedQuery` per query here, whose
  `Name`, `Description` and `QueryString` equal `title`, `description` and
  `athena_sql` (tests/test_athena_template.py fails if they drift apart);
* `local_duckdb` runs `duckdb_sql` over a local snapshot folder.

Tables (Glue in Athena, views in DuckDB): `devices`, `device_details`,
`device_apps`, `device_posture` (columns: `schema.TABLES`) and `changes` (columns: `CHANGES`
below), each partitioned by `dt` (`YYYY-MM-DD`, the UTC day of the snapshot).

"Latest" means the greatest `snapshot_id` of the latest `dt` partition. In
Athena every query filters on `dt`, so it reads only the days it asks for: the
latest snapshot is looked for in the last three days (today and the two days
before, UTC), and the change queries read the days of their window. DuckDB reads
a local folder: its latest snapshot is simply the newest one in the folder.

Timestamps are stored as ISO 8601 UTC text (`2026-11-23T10:15:00.123456Z`):
Athena parses them with `from_iso8601_timestamp`; `local_duckdb` defines a DuckDB
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
    # A required parameter's example names no device or app of yours: the operator's commands refuse to run
    # the query without a value rather than answer for the example.
    required: bool = False
    whole_number: bool = False  # the value must be digits (it goes into an INTERVAL)


@dataclass(frozen=True)
class FleetQuery:
    name: str  # identifier: local_duckdb.run_query(name, ...)
    title: str  # the Athena named query's Name
    description: str  # the Athena named query's Description
    athena_sql: str
    duckdb_sql: str
    parameters: tuple[QueryParameter, ...] = field(default=())

    def defaults(self) -> dict[str, str]:
        return {parameter.name: parameter.default for parameter in self.parameters}


# --- the two dialects -----------------------------------------------------------------
# Each question is written once; where Athena and DuckDB spell a piece differently, the text
# names it ({now}, {detected_at}, ...) and each dialect fills it in. Athena reads only recent
# `dt` partitions (_RECENT); DuckDB reads a local folder: its latest snapshot is the newest one.
_RECENT = "CAST(current_date - INTERVAL '2' DAY AS varchar)"
_LATEST = """WITH latest AS (
    SELECT max(dt) AS dt, max(snapshot_id) AS snapshot_id
    FROM devices{recent}
)"""
ATHENA: dict[str, str] = {
    "latest": _LATEST.format(recent=f"\n    WHERE dt >= {_RECENT}"),  # the newest of the last three days
    "recent_details": f"\n    AND dd.dt >= {_RECENT}",
    "dt_7_days_ago": "CAST(current_date - INTERVAL '7' DAY AS varchar)",
    "dt_90_days_ago": "CAST(current_date - INTERVAL '90' DAY AS varchar)",
    "now": "current_timestamp",
    "last_7_days": "INTERVAL '7' DAY",
    "days_between": "date_diff",
    "detected_at": "with_timezone(date_parse(c.snapshot_id, '%Y%m%dT%H%i%sZ'), 'UTC')",
    # UNNEST names the five struct fields by position (CHANGES keeps them in this order).
    "each_change": "UNNEST(c.changes) AS t(change_field, value_before, value_after, change_severity, change_reason)",
    "change_field": "t.change_field",
    "change_columns": "t.change_field,\n    t.value_before,\n    t.value_after,\n    t.change_severity,\n"
                      "    t.change_reason",
    "join_list": "array_join(transform",
    "lambda": "x ->",
    "list_length": "cardinality",
}
DUCKDB: dict[str, str] = {
    "latest": _LATEST.format(recent=""),
    "recent_details": "",
    "dt_7_days_ago": "strftime(current_date - INTERVAL 7 DAY, '%Y-%m-%d')",
    "dt_90_days_ago": "strftime(current_date - INTERVAL 90 DAY, '%Y-%m-%d')",
    "now": "current_localtimestamp()",
    "last_7_days": "INTERVAL 7 DAY",
    "days_between": "date_sub",
    "detected_at": "strptime(c.snapshot_id, '%Y%m%dT%H%M%SZ')",
    "each_change": "LATERAL (SELECT unnest(c.changes) AS ch) t",
    "change_field": "t.ch.field",
    "change_columns": "t.ch.field AS change_field,\n    t.ch.before AS value_before,\n    t.ch.after AS value_after,\n"
                      "    t.ch.severity AS change_severity,\n    t.ch.reason AS change_reason",
    "join_list": "array_to_string(list_transform",
    "lambda": "lambda x:",
    "list_length": "len",
}

CHROME = QueryParameter("bundle_id", "com.google.Chrome", "'com.google.Chrome'", required=True)
SERIAL = QueryParameter("serial_number", "C02XXXXXXXXX", "'C02XXXXXXXXX'", required=True)
STALE_DAYS = QueryParameter("days", "14", "INTERVAL '14' DAY", whole_number=True)
_DUCKDB_VALUES = {"days": "to_days(CAST($days AS INTEGER))"}  # else `$name`


def _query(name: str, title: str, description: str, athena: str, duckdb: str | None = None,
           parameters: tuple[QueryParameter, ...] = ()) -> FleetQuery:
    """A FleetQuery from its text (or its two texts), filled in with each dialect's words and parameters."""
    return FleetQuery(
        name=name, title=title, description=description, parameters=parameters,
        athena_sql=athena.format(**ATHENA, **{p.name: p.athena_placeholder for p in parameters}),
        duckdb_sql=(athena if duckdb is None else duckdb).format(
            **DUCKDB, **{p.name: _DUCKDB_VALUES.get(p.name, f"${p.name}") for p in parameters}))


def _latest(name: str, title: str, description: str, select: str, *, partitions: tuple[str, ...],
            where: tuple[str, ...] = (), then: str, parameters: tuple[QueryParameter, ...] = ()) -> FleetQuery:
    """A question about the latest snapshot: `select` (SELECT ... FROM ... JOIN latest ...), the
    conditions `where`, then `then` (GROUP BY, ORDER BY). Athena also holds each table alias of
    `partitions` to the recent `dt` partitions."""
    athena_where = [f"{alias}.dt >= {_RECENT}" for alias in partitions] + list(where)
    duckdb_where = "\nWHERE " + "\n  AND ".join(where) if where else ""
    return _query(name, title, description,
                  "{latest}\n" + select + "\nWHERE " + "\n  AND ".join(athena_where) + "\n" + then,
                  "{latest}\n" + select + duckdb_where + "\n" + then, parameters)


_LATEST_DEVICES = "FROM devices d\nJOIN latest l ON d.dt = l.dt AND d.snapshot_id = l.snapshot_id"
_DETAILS_OF_D = "device_details dd ON dd.dt = d.dt AND dd.snapshot_id = d.snapshot_id AND dd.device_id = d.device_id"
# The first columns of every list of Macs: which Mac, whose, and on what.
_WHICH_MAC = 'd.device_name,\n    d.serial_number,\n    d."user".email AS user_email,\n    d.os_version,\n    d.blueprint_name'

QUERIES: tuple[FleetQuery, ...] = (
    _latest(
        "latest_inventory", "Kandji: latest inventory",
        "Every device of the latest snapshot, every platform (Mac, iPhone, iPad, AppleTV, Windows, Android): "
        "identity, OS and build, user, blueprint, MDM/agent state and last check-in.",
        f"""SELECT
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
{_LATEST_DEVICES}""",
        partitions=("d",), then="ORDER BY d.platform, d.device_name, d.serial_number"),
    _latest(
        "not_checked_in", "Kandji: devices not checked in for 14 days",
        "Devices of the latest snapshot whose last check-in is more than 14 days ago (or unknown). "
        "Edit INTERVAL '14' DAY for another threshold.",
        f"""SELECT
    d.device_name,
    d.serial_number,
    d.platform,
    d."user".email AS user_email,
    d.blueprint_name,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    {{days_between}}('day', from_iso8601_timestamp(d.last_check_in), {{now}}) AS days_since_check_in,
    d.is_missing,
    d.device_id
{_LATEST_DEVICES}""",
        partitions=("d",), parameters=(STALE_DAYS,),
        where=("(d.last_check_in IS NULL\n       OR from_iso8601_timestamp(d.last_check_in) < {now} - {days})",),
        then="ORDER BY d.last_check_in NULLS FIRST, d.device_name"),
    _latest(
        "filevault_off", "Kandji: Macs with FileVault off",
        "Macs of the latest snapshot whose FileVault is off, or not reported (filevault_enabled NULL), with "
        "whether a recovery key is escrowed.",
        f"""SELECT
    {_WHICH_MAC},
    dd.filevault.filevault_enabled AS filevault_enabled,
    dd.filevault.filevault_prk_escrowed AS recovery_key_escrowed,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    d.device_id
{_LATEST_DEVICES}
JOIN {_DETAILS_OF_D}""",
        partitions=("d", "dd"), where=("d.platform = 'Mac'", "coalesce(dd.filevault.filevault_enabled, false) = false"),
        then="ORDER BY d.device_name, d.serial_number"),
    _latest(
        "agent_missing", "Kandji: Macs without the Kandji agent",
        "Macs of the latest snapshot on which the Kandji agent is not installed (or not reported).",
        f"""SELECT
    {_WHICH_MAC},
    d.mdm_enabled,
    d.agent_installed,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    d.device_id
{_LATEST_DEVICES}""",
        partitions=("d",), where=("d.platform = 'Mac'", "coalesce(d.agent_installed, false) = false"),
        then="ORDER BY d.device_name, d.serial_number"),
    _latest(
        "platform_summary", "Kandji: devices per platform",
        "The latest snapshot per platform (Windows and Android included): devices, MDM off, missing, in lost "
        "mode, agent installed, and how many OS versions are in use.",
        f"""SELECT
    d.platform,
    count(*) AS device_count,
    count_if(NOT coalesce(d.mdm_enabled, false)) AS mdm_disabled,
    count_if(coalesce(d.is_missing, false)) AS missing,
    count_if(upper(coalesce(d.lost_mode_status, '')) = 'ENABLED') AS in_lost_mode,
    count_if(coalesce(d.agent_installed, false)) AS agent_installed,
    count(DISTINCT d.os_version) AS os_versions
{_LATEST_DEVICES}""",
        partitions=("d",), then="GROUP BY d.platform\nORDER BY device_count DESC, d.platform"),
    _latest(
        "lost_mode_devices", "Kandji: devices in lost mode",
        "Devices of the latest snapshot in lost mode, on any platform that reports it (the list's "
        "lost_mode_status or the details' lost_mode section): who enabled it when, and the last location "
        "reported.",
        f"""SELECT
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
{_LATEST_DEVICES}
LEFT JOIN {_DETAILS_OF_D}{{recent_details}}""",
        partitions=("d",),
        where=("(upper(coalesce(d.lost_mode_status, '')) = 'ENABLED'\n"
               "       OR upper(coalesce(dd.lost_mode.lost_mode_status, '')) = 'ENABLED')",),
        then="ORDER BY d.platform, d.device_name, d.serial_number"),
    _latest(
        "app_inventory", "Kandji: app inventory for one bundle id",
        "Every install of one app (edit 'com.google.Chrome') in the latest snapshot: device, version and path "
        "(a device may hold several copies).",
        """SELECT
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
JOIN devices d ON d.dt = a.dt AND d.snapshot_id = a.snapshot_id AND d.device_id = a.device_id""",
        partitions=("a", "d"), parameters=(CHROME,), where=("a.bundle_id = {bundle_id}",),
        then="ORDER BY a.version DESC, d.device_name, a.path"),
    _latest(
        "app_version_spread", "Kandji: version spread for one bundle id",
        "How many devices run each version of one app (edit 'com.google.Chrome') in the latest snapshot; "
        "installs counts every copy.",
        """SELECT
    a.version,
    count(DISTINCT a.device_id) AS device_count,
    count(*) AS install_count
FROM device_apps a
JOIN latest l ON a.dt = l.dt AND a.snapshot_id = l.snapshot_id""",
        partitions=("a",), parameters=(CHROME,), where=("a.bundle_id = {bundle_id}",),
        then="GROUP BY a.version\nORDER BY device_count DESC, a.version DESC"),
    _query(
        "device_change_history", "Kandji: change history of one device",
        "Every change recorded for one device (edit 'C02XXXXXXXXX') over the last 90 days, one row per changed "
        "field; app events show the app and its versions.",
        """SELECT
    {detected_at} AS detected_at,
    c.change_type,
    c.severity,
    c.device_name,
    c.platform,
    {change_columns},
    c.app.app_name AS app_name,
    c.app.bundle_id AS bundle_id,
    c.app.previous_version AS previous_version,
    c.app.version AS version,
    c.snapshot_id,
    c.event_id
FROM changes c
LEFT JOIN {each_change} ON true
WHERE c.dt >= {dt_90_days_ago}
  AND c.serial_number = {serial_number}
ORDER BY c.snapshot_id, c.event_id, {change_field}""",
        parameters=(SERIAL,)),
    _query(
        "high_severity_changes", "Kandji: high-severity changes of the last 7 days",
        "Security-relevant changes (severity high) detected in the last 7 days, newest first: removed devices, "
        "FileVault or agent turned off, lost mode, recovery lock or activation lock changes, OS downgrades, on "
        "every platform.",
        """SELECT
    {detected_at} AS detected_at,
    c.change_type,
    c.device_name,
    c.serial_number,
    c.platform,
    {join_list}(c.changes, {lambda} concat(x.field, ': ', coalesce(x.before, 'null'), ' -> ',
                                                coalesce(x.after, 'null'))), '; ') AS changed_fields,
    nullif({join_list}(c.changes, {lambda} x.reason), '; '), '') AS reasons,
    c.app.bundle_id AS bundle_id,
    c.app.previous_version AS previous_version,
    c.app.version AS version,
    {list_length}(c.apps) AS app_count,
    c.snapshot_id,
    c.event_id
FROM changes c
WHERE c.dt >= {dt_7_days_ago}
  AND c.severity = 'high'
  AND {detected_at} >= {now} - {last_7_days}
ORDER BY c.snapshot_id DESC, c.event_id"""),
)

# --- Prism posture (device_posture: one row per device per snapshot, a struct per category) -------
def _posture_off(column: str, title: str, description: str, name: str) -> FleetQuery:
    """Devices of the latest snapshot whose posture `column` (`category.field`) is false."""
    category = column.split(".")[0]
    return _latest(name, title, description, f"""SELECT
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
JOIN devices d ON d.dt = p.dt AND d.snapshot_id = p.snapshot_id AND d.device_id = p.device_id""",
                   partitions=("p", "d"), where=(f"p.{column} = false",), then="ORDER BY d.device_name, d.serial_number")


POSTURE_QUERIES: tuple[FleetQuery, ...] = (
    _posture_off("application_firewall.status", "Kandji: devices with the firewall off",
                 "Macs of the latest snapshot whose application firewall is off, as Prism reported it "
                 "(device_posture.application_firewall), with when the device last reported it.",
                 "firewall_off"),
    _posture_off("startup_settings.sip", "Kandji: devices with SIP disabled",
                 "Macs of the latest snapshot with System Integrity Protection disabled, as Prism reported it "
                 "(device_posture.startup_settings), with when the device last reported it.",
                 "sip_disabled"),
    _query(
        "posture_changes", "Kandji: posture changes of the last 7 days",
        "Every change to a device's security posture detected in the last 7 days (firewall, Gatekeeper, XProtect, "
        "SIP, secure boot, activation lock, FileVault), newest first.",
        """SELECT
    {detected_at} AS detected_at,
    c.device_name,
    c.serial_number,
    c.platform,
    {change_columns},
    c.snapshot_id,
    c.event_id
FROM changes c
CROSS JOIN {each_change}
WHERE c.dt >= {dt_7_days_ago}
  AND c.change_type = 'device_changed'
  AND ({change_field} LIKE 'posture.%' OR {change_field} = 'filevault.filevault_enabled')
  AND {detected_at} >= {now} - {last_7_days}
ORDER BY c.snapshot_id DESC, c.event_id, {change_field}"""),
)
QUERIES += POSTURE_QUERIES

_BY_NAME = {query.name: query for query in QUERIES}


def by_name(name: str) -> FleetQuery:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no fleet query {name!r}; known: {', '.join(_BY_NAME)}") from None
