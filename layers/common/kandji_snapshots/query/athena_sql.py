"""The fleet's SQL, written once, in Athena's dialect (Trino): the tables it reads, the views, the saved queries.

This is the only text of every view and saved query:

* `template.yaml` holds each view (a Glue VIRTUAL_VIEW whose base64 Presto view text carries `sql`)
  and each saved query (`AWS::Athena::NamedQuery`: `title`, `description`, `athena_sql`) verbatim:
  CloudFormation cannot include a file, so the template holds a copy, and
  tests/test_athena_template.py fails when the copy and this module differ, either way;
* the CLI's `kandji-snapshots query` and the tests run the same text with DuckDB, translated by
  sqlglot (query/local_duckdb.py): there is no second dialect to keep in step.

Committed snapshots only. A snapshot's table parts are written before its manifest (the commit);
a run killed in between leaves parts without a manifest. Nothing here reads a snapshot table
without going through `committed_snapshots` (one row per snapshot whose manifest exists,
snapshots/committed.py): the `latest_*` views take the greatest committed snapshot id of the
last three days (today and the two days before, UTC) and filter their table to those days, so
Athena reads only those `dt` partitions; the state-at-a-time query takes the latest committed
snapshot at or before the time asked. `changes` is written by the differ, which runs only for
committed snapshots.

Every security query reads `device_posture` (Prism: every device, every run), falls back to the
device details only where Prism has no row for the device (FileVault, activation lock), and lists
a device whose state is unknown (no row anywhere, details never read) apart from one that is off.

Timestamps are stored as ISO 8601 UTC text: `from_iso8601_timestamp(col)` parses them. A snapshot
id (`20261123T101500Z`) is the UTC time its run started.

Placeholders: saved queries take no parameters in Athena, so the text carries an example value
to edit ('com.google.Chrome', 'C02XXXXXXXXX', ...); `FleetQuery.with_values` puts other values
in its place (the CLI's --param, the differ's e-mails).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from kandji_snapshots.snapshots import schema
from kandji_snapshots.snapshots.schema import BIGINT, BOOLEAN, STRING, Array, Type, spell, struct
from kandji_snapshots.snapshots.tenant_schema import TENANT_TABLES

# The change events the differ writes to changes/dt=YYYY-MM-DD/<snapshot_id>.json.gz, one
# JSON object per line. Fields an event type does not use are absent (read as NULL).
# `before`/`after` are declared string: the JSON SerDe reads any JSON scalar into a string
# column as its text (true -> 'true', 12 -> '12'), and so does DuckDB.
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
    "changes": Array(struct(field=STRING, before=STRING, after=STRING, severity=STRING, reason=STRING)),
    "app": struct(app_name=STRING, bundle_id=STRING, path=STRING, version=STRING,
                  previous_version=STRING),  # app_* events
    "apps": Array(struct(app_name=STRING, bundle_id=STRING, version=STRING, path=STRING)),  # device_added/removed
    "truncated": BOOLEAN,
}

# Every table (Glue in Athena, DuckDB views locally) with its columns; the `dt` partition comes on top.
TABLE_COLUMNS: dict[str, dict[str, Type]] = {
    **schema.TABLES,
    "committed_snapshots": schema.COMMITTED_SNAPSHOTS,
    "changes": CHANGES,
    **TENANT_TABLES,  # collect/tenant_sources.py (docs/tenant-sources.md)
}
# Where each table's files live, below the bucket (Athena) or the local folder (DuckDB).
TABLE_PREFIXES: dict[str, str] = {
    **{table: f"snapshots/{table}/" for table in (*schema.TABLES, "committed_snapshots", *TENANT_TABLES)},
    "changes": "changes/",
}
PARTITION_KEY = "dt"


def hive_columns(table: str) -> dict[str, str]:
    """Column name -> Hive type of a table, as its Glue table declares it."""
    return {name: kind.hive() for name, kind in TABLE_COLUMNS[table].items()}


_PRESTO_SCALARS = {"string": "varchar", "timestamp": "varchar", "json": "varchar", "boolean": "boolean",
                   "bigint": "bigint", "double": "double"}


def presto_type(kind: Type) -> str:
    """The type Athena's engine gives a column of logical type `kind` (a Presto view declares these)."""
    return spell(kind, _PRESTO_SCALARS, "array({})", "row({})", "{name} {type}", ",")


# --- views ------------------------------------------------------------------------------
_RECENT = "CAST(current_date - INTERVAL '2' DAY AS varchar)"


@dataclass(frozen=True)
class View:
    """A view over one table: its rows of one snapshot, every column of the table (and `dt`)."""

    name: str
    table: str
    description: str
    sql: str

    def columns(self) -> dict[str, Type]:
        return {**TABLE_COLUMNS[self.table], PARTITION_KEY: STRING}


def _latest_view(name: str, table: str, what: str) -> View:
    return View(name, table, f"{what} of the latest committed snapshot (of the last three days, UTC).", f"""SELECT t.*
FROM {table} t
JOIN (
    SELECT max(snapshot_id) AS snapshot_id
    FROM committed_snapshots
    WHERE dt >= {_RECENT}
) latest ON t.snapshot_id = latest.snapshot_id
WHERE t.dt >= {_RECENT}""")


VIEWS: tuple[View, ...] = (
    _latest_view("latest_devices", "devices", "Every device"),
    _latest_view("latest_device_details", "device_details", "Every device's details (as last read)"),
    _latest_view("latest_posture", "device_posture", "Every device's Prism posture"),
    _latest_view("latest_apps", "device_apps", "Every installed app"),
)


# --- saved queries ----------------------------------------------------------------------
@dataclass(frozen=True)
class QueryParameter:
    name: str  # the CLI's --param NAME=VALUE
    default: str  # the example value
    athena_placeholder: str  # its text in the Athena SQL, replaced by another value's
    # A required parameter's example names no device or app of yours: the operator's commands refuse to run
    # the query without a value rather than answer for the example.
    required: bool = False

    @property
    def strip_value(self) -> bool:
        """Whether the value is a number or a time (surrounding spaces mean nothing), not a name."""
        return self.name in ("days", "at")

    def render(self, value: str) -> str:
        """`value` as the text that replaces the placeholder: a quoted literal, or a checked number or time."""
        text = str(value)
        if self.name == "days":
            if not text.isdigit():
                raise ValueError(f"{self.name}: a whole number of days, not {text!r}")
            return f"INTERVAL '{int(text)}' DAY"
        if self.name == "at":
            try:
                datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{self.name}: an ISO 8601 time such as 2026-11-24T09:00:00Z, not {text!r}") from None
        return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class FleetQuery:
    name: str  # identifier: the CLI's --query NAME
    title: str  # the Athena named query's Name
    description: str  # the Athena named query's Description
    athena_sql: str
    parameters: tuple[QueryParameter, ...] = field(default=())

    def defaults(self) -> dict[str, str]:
        return {parameter.name: parameter.default for parameter in self.parameters}

    def with_values(self, **values: str) -> str:
        """The Athena SQL with these values in place of the example values (the others stay)."""
        known = {parameter.name: parameter for parameter in self.parameters}
        unknown = set(values) - set(known)
        if unknown:
            raise TypeError(f"{self.name} takes no parameter {', '.join(sorted(unknown))}")
        sql = self.athena_sql
        for name, value in values.items():
            sql = sql.replace(known[name].athena_placeholder, known[name].render(value))
        return sql


CHROME = QueryParameter("bundle_id", "com.google.Chrome", "'com.google.Chrome'", required=True)
SERIAL = QueryParameter("serial_number", "C02XXXXXXXXX", "'C02XXXXXXXXX'", required=True)
STALE_DAYS = QueryParameter("days", "14", "INTERVAL '14' DAY")
AT_TIME = QueryParameter("at", "2026-11-24T09:00:00Z", "'2026-11-24T09:00:00Z'")

# The first columns of every list of devices: which device, whose, and on what.
_WHICH_DEVICE = ("d.device_name", "d.serial_number", 'd."user".email AS user_email', "d.os_version", "d.blueprint_name")


def _select_list(columns: tuple[str, ...], indent: int) -> str:
    return "".join(" " * indent + column + ",\n" for column in columns).rstrip("\n")
# `changes` is one array of five-field rows per event. Trino's UNNEST would spread a row over
# five columns, DuckDB's would not: each row is wrapped in a one-element array, which both
# engines unnest into one column, `t.change`, read as `t.change[1].field`.
_EACH_CHANGE = "UNNEST(transform(c.changes, x -> ARRAY[x])) AS t(change)"
_CHANGE_COLUMNS = """    t.change[1].field AS change_field,
    t.change[1].before AS value_before,
    t.change[1].after AS value_after,
    t.change[1].severity AS change_severity,
    t.change[1].reason AS change_reason,"""
_DETECTED_AT = "with_timezone(date_parse(c.snapshot_id, '%Y%m%dT%H%i%sZ'), 'UTC')"


def _posture_query(name: str, title: str, description: str, setting: tuple[str, str], columns: str, condition: str,
                   joins: str = "") -> FleetQuery:
    """Macs of the latest committed snapshot whose setting is off (`condition`), then those where it is
    unknown (NULL). `setting`: the value read and its column name; `columns`: the rest shown."""
    value, column = setting
    return FleetQuery(name, title, description, f"""WITH macs AS (
    SELECT
{_select_list(_WHICH_DEVICE + ("d.platform", "d.device_id"), 8)}
        {value} AS {column},
{columns}
    FROM latest_devices d
    LEFT JOIN latest_posture p ON p.device_id = d.device_id{joins}
    WHERE d.platform = 'Mac'
)
SELECT
    CASE WHEN {column} IS NULL THEN 'unknown' ELSE 'off' END AS status,
    *
FROM macs
WHERE {column} IS NULL OR {condition}
ORDER BY status, device_name, serial_number""")


QUERIES: tuple[FleetQuery, ...] = (
    FleetQuery(
        "latest_inventory", "Kandji: latest inventory",
        "Every device of the latest committed snapshot, every platform (Mac, iPhone, iPad, AppleTV, Windows, "
        "Android): identity, OS and build, user, blueprint, MDM/agent state and last check-in.",
        """SELECT
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
FROM latest_devices d
ORDER BY d.platform, d.device_name, d.serial_number"""),
    FleetQuery(
        "not_checked_in", "Kandji: devices not checked in for 14 days",
        "Devices of the latest committed snapshot whose last check-in is more than 14 days ago (or unknown). "
        "Edit INTERVAL '14' DAY for another threshold.",
        """SELECT
    d.device_name,
    d.serial_number,
    d.platform,
    d."user".email AS user_email,
    d.blueprint_name,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    date_diff('day', from_iso8601_timestamp(d.last_check_in), current_timestamp) AS days_since_check_in,
    d.is_missing,
    d.device_id
FROM latest_devices d
WHERE d.last_check_in IS NULL
   OR from_iso8601_timestamp(d.last_check_in) < current_timestamp - INTERVAL '14' DAY
ORDER BY d.last_check_in NULLS FIRST, d.device_name""", (STALE_DAYS,)),
    FleetQuery(
        "agent_missing", "Kandji: Macs without the Kandji agent",
        "Macs of the latest committed snapshot on which the Kandji agent is not installed (or not reported).",
        f"""SELECT
{_select_list(_WHICH_DEVICE, 4)}
    d.mdm_enabled,
    d.agent_installed,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    d.device_id
FROM latest_devices d
WHERE d.platform = 'Mac'
  AND coalesce(d.agent_installed, false) = false
ORDER BY d.device_name, d.serial_number"""),
    FleetQuery(
        "platform_summary", "Kandji: devices per platform",
        "The latest committed snapshot per platform (Windows and Android included): devices, MDM off, missing, "
        "in lost mode, agent installed, and how many OS versions are in use.",
        """SELECT
    d.platform,
    count(*) AS device_count,
    count_if(NOT coalesce(d.mdm_enabled, false)) AS mdm_disabled,
    count_if(coalesce(d.is_missing, false)) AS missing,
    count_if(upper(coalesce(d.lost_mode_status, '')) = 'ENABLED') AS in_lost_mode,
    count_if(coalesce(d.agent_installed, false)) AS agent_installed,
    count(DISTINCT d.os_version) AS os_versions
FROM latest_devices d
GROUP BY d.platform
ORDER BY device_count DESC, d.platform"""),
    FleetQuery(
        "lost_mode_devices", "Kandji: devices in lost mode",
        "Devices of the latest committed snapshot in lost mode, on any platform that reports it (the list's "
        "lost_mode_status or the details' lost_mode section): who enabled it when, and the last location reported.",
        """SELECT
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
FROM latest_devices d
LEFT JOIN latest_device_details dd ON dd.device_id = d.device_id
WHERE upper(coalesce(d.lost_mode_status, '')) = 'ENABLED'
   OR upper(coalesce(dd.lost_mode.lost_mode_status, '')) = 'ENABLED'
ORDER BY d.platform, d.device_name, d.serial_number"""),
    FleetQuery(
        "app_inventory", "Kandji: app inventory for one bundle id",
        "Every install of one app (edit 'com.google.Chrome') in the latest committed snapshot: device, version and "
        "path (a device may hold several copies).",
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
FROM latest_apps a
JOIN latest_devices d ON d.device_id = a.device_id
WHERE a.bundle_id = 'com.google.Chrome'
ORDER BY a.version DESC, d.device_name, a.path""", (CHROME,)),
    FleetQuery(
        "app_version_spread", "Kandji: version spread for one bundle id",
        "How many devices run each version of one app (edit 'com.google.Chrome') in the latest committed snapshot; "
        "installs counts every copy.",
        """SELECT
    a.version,
    count(DISTINCT a.device_id) AS device_count,
    count(*) AS install_count
FROM latest_apps a
WHERE a.bundle_id = 'com.google.Chrome'
GROUP BY a.version
ORDER BY device_count DESC, a.version DESC""", (CHROME,)),
    FleetQuery(
        "device_at_time", "Kandji: one device at a time",
        "The state of one device (edit 'C02XXXXXXXXX') in the latest snapshot committed at or before a time (edit "
        "'2026-11-24T09:00:00Z', UTC): identity, user, OS, MDM/agent, and its posture (Prism, else the details).",
        """WITH snapshot AS (
    SELECT max(snapshot_id) AS snapshot_id
    FROM committed_snapshots
    WHERE dt BETWEEN CAST(date(from_iso8601_timestamp('2026-11-24T09:00:00Z')) - INTERVAL '2' DAY AS varchar)
                 AND CAST(date(from_iso8601_timestamp('2026-11-24T09:00:00Z')) AS varchar)
      AND from_iso8601_timestamp(committed_at) <= from_iso8601_timestamp('2026-11-24T09:00:00Z')
)
SELECT
    d.snapshot_id,
    d.device_name,
    d.serial_number,
    d.platform,
    d."user".email AS user_email,
    d.os_version,
    d.blueprint_name,
    d.mdm_enabled,
    d.agent_installed,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    CASE WHEN p.filevault IS NOT NULL THEN p.filevault.status
         WHEN dd.fetched_at IS NOT NULL THEN dd.filevault.filevault_enabled END AS filevault_enabled,
    p.application_firewall.status AS firewall_enabled,
    p.startup_settings.sip AS sip_enabled,
    p.startup_settings.secure_boot_level AS secure_boot_level,
    p.gatekeeper_and_xprotect.gatekeeper_status AS gatekeeper_enabled,
    p.gatekeeper_and_xprotect.xprotect_version AS xprotect_version,
    CASE WHEN p.activation_lock IS NOT NULL THEN p.activation_lock.activation_lock_enabled
         WHEN dd.fetched_at IS NOT NULL THEN (dd.activation_lock.user_activation_lock_enabled
                                              OR dd.activation_lock.device_activation_lock_enabled)
         END AS activation_lock_enabled,
    from_iso8601_timestamp(dd.fetched_at) AS details_read_at,
    d.device_id
FROM devices d
JOIN snapshot s ON d.snapshot_id = s.snapshot_id
LEFT JOIN device_posture p ON p.snapshot_id = d.snapshot_id AND p.device_id = d.device_id
    AND p.dt BETWEEN CAST(date(from_iso8601_timestamp('2026-11-24T09:00:00Z')) - INTERVAL '2' DAY AS varchar)
                 AND CAST(date(from_iso8601_timestamp('2026-11-24T09:00:00Z')) AS varchar)
LEFT JOIN device_details dd ON dd.snapshot_id = d.snapshot_id AND dd.device_id = d.device_id
    AND dd.dt BETWEEN CAST(date(from_iso8601_timestamp('2026-11-24T09:00:00Z')) - INTERVAL '2' DAY AS varchar)
                  AND CAST(date(from_iso8601_timestamp('2026-11-24T09:00:00Z')) AS varchar)
WHERE d.dt BETWEEN CAST(date(from_iso8601_timestamp('2026-11-24T09:00:00Z')) - INTERVAL '2' DAY AS varchar)
               AND CAST(date(from_iso8601_timestamp('2026-11-24T09:00:00Z')) AS varchar)
  AND d.serial_number = 'C02XXXXXXXXX'""", (SERIAL, AT_TIME)),
    FleetQuery(
        "device_change_history", "Kandji: change history of one device",
        "Every change recorded for one device (edit 'C02XXXXXXXXX') over the last 90 days, one row per changed "
        "field; app events show the app and its versions.",
        f"""SELECT
    {_DETECTED_AT} AS detected_at,
    c.change_type,
    c.severity,
    c.device_name,
    c.platform,
{_CHANGE_COLUMNS}
    c.app.app_name AS app_name,
    c.app.bundle_id AS bundle_id,
    c.app.previous_version AS previous_version,
    c.app.version AS version,
    c.snapshot_id,
    c.event_id
FROM changes c
LEFT JOIN {_EACH_CHANGE} ON true
WHERE c.dt >= CAST(current_date - INTERVAL '90' DAY AS varchar)
  AND c.serial_number = 'C02XXXXXXXXX'
ORDER BY c.snapshot_id, c.event_id, change_field""", (SERIAL,)),
    FleetQuery(
        "high_severity_changes", "Kandji: high-severity changes of the last 7 days",
        "Security-relevant changes (severity high) detected in the last 7 days, newest first: removed devices, "
        "FileVault or agent turned off, lost mode, recovery lock or activation lock changes, OS downgrades, on "
        "every platform.",
        f"""SELECT
    {_DETECTED_AT} AS detected_at,
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
  AND {_DETECTED_AT} >= current_timestamp - INTERVAL '7' DAY
ORDER BY c.snapshot_id DESC, c.event_id"""),
    FleetQuery(
        "posture_changes", "Kandji: posture changes of the last 7 days",
        "Every change to a device's security posture detected in the last 7 days (firewall, Gatekeeper, XProtect, "
        "SIP, secure boot, activation lock, FileVault), newest first.",
        f"""SELECT
    {_DETECTED_AT} AS detected_at,
    c.device_name,
    c.serial_number,
    c.platform,
{_CHANGE_COLUMNS}
    c.snapshot_id,
    c.event_id
FROM changes c
CROSS JOIN {_EACH_CHANGE}
WHERE c.dt >= CAST(current_date - INTERVAL '7' DAY AS varchar)
  AND c.change_type = 'device_changed'
  AND (t.change[1].field LIKE 'posture.%' OR t.change[1].field = 'filevault.filevault_enabled')
  AND {_DETECTED_AT} >= current_timestamp - INTERVAL '7' DAY
ORDER BY c.snapshot_id DESC, c.event_id, change_field"""),
    # --- security posture: Prism first (read every run), the details only where Prism has no row -------
    _posture_query(
        "filevault_off", "Kandji: Macs with FileVault off",
        "Macs of the latest committed snapshot whose FileVault is off, then those whose state is unknown, as Prism "
        "reported it (device_posture, read every run), or the device details where Prism has no row.",
        ("""CASE WHEN p.filevault IS NOT NULL THEN p.filevault.status
             WHEN dd.fetched_at IS NOT NULL THEN dd.filevault.filevault_enabled END""", "filevault_enabled"),
        """        CASE WHEN p.filevault IS NOT NULL THEN p.filevault.key_escrowed
             WHEN dd.fetched_at IS NOT NULL THEN dd.filevault.filevault_prk_escrowed END AS recovery_key_escrowed,
        CASE WHEN p.filevault IS NOT NULL THEN 'prism'
             WHEN dd.fetched_at IS NOT NULL THEN 'details' END AS source,
        CASE WHEN p.filevault IS NOT NULL THEN from_iso8601_timestamp(p.filevault.last_collected_at)
             ELSE from_iso8601_timestamp(dd.fetched_at) END AS reported_at""",
        "NOT filevault_enabled",
        "\n    LEFT JOIN latest_device_details dd ON dd.device_id = d.device_id"),
    _posture_query(
        "firewall_off", "Kandji: Macs with the firewall off",
        "Macs of the latest committed snapshot whose application firewall is off, then those whose state is "
        "unknown (Prism has no row), as Prism reported it (device_posture.application_firewall, read every run).",
        ("p.application_firewall.status", "firewall_enabled"),
        "        from_iso8601_timestamp(p.application_firewall.last_collected_at) AS reported_at",
        "NOT firewall_enabled"),
    _posture_query(
        "sip_disabled", "Kandji: Macs with SIP disabled",
        "Macs of the latest committed snapshot with System Integrity Protection disabled, then those whose state is "
        "unknown, as Prism reported it (device_posture.startup_settings, read every run).",
        ("p.startup_settings.sip", "sip_enabled"),
        "        from_iso8601_timestamp(p.startup_settings.last_collected_at) AS reported_at",
        "NOT sip_enabled"),
    _posture_query(
        "secure_boot_reduced", "Kandji: Macs below full secure boot",
        "Macs of the latest committed snapshot whose secure boot level is below full (medium, reduced, permissive, "
        "off), then those whose level is unknown, as Prism reported it (device_posture.startup_settings).",
        ("p.startup_settings.secure_boot_level", "secure_boot_level"),
        "        from_iso8601_timestamp(p.startup_settings.last_collected_at) AS reported_at",
        "lower(secure_boot_level) NOT LIKE 'full%'"),
    _posture_query(
        "gatekeeper_off", "Kandji: Macs with Gatekeeper or XProtect off",
        "Macs of the latest committed snapshot whose Gatekeeper is off or whose XProtect reports no version, then "
        "those whose state is unknown, as Prism reported it (device_posture.gatekeeper_and_xprotect).",
        ("p.gatekeeper_and_xprotect.gatekeeper_status", "gatekeeper_enabled"),
        """        p.gatekeeper_and_xprotect.xprotect_version AS xprotect_version,
        from_iso8601_timestamp(p.gatekeeper_and_xprotect.last_collected_at) AS reported_at""",
        "(NOT gatekeeper_enabled OR coalesce(xprotect_version, '') = '')"),
    FleetQuery(
        "activation_lock_on", "Kandji: devices with activation lock on",
        "Macs, iPhones and iPads of the latest committed snapshot with activation lock on (by the user or the "
        "device), then those whose state is unknown, as Prism reported it (device_posture.activation_lock), or the "
        "device details where Prism has no row.",
        f"""WITH apple_devices AS (
    SELECT
{_select_list(_WHICH_DEVICE + ("d.platform", "d.device_id"), 8)}
        CASE WHEN p.activation_lock IS NOT NULL THEN p.activation_lock.user_activation_lock_enabled
             WHEN dd.fetched_at IS NOT NULL THEN dd.activation_lock.user_activation_lock_enabled END AS by_user,
        CASE WHEN p.activation_lock IS NOT NULL THEN p.activation_lock.device_activation_lock_enabled
             WHEN dd.fetched_at IS NOT NULL THEN dd.activation_lock.device_activation_lock_enabled END AS by_device,
        CASE WHEN p.activation_lock IS NOT NULL THEN 'prism'
             WHEN dd.fetched_at IS NOT NULL THEN 'details' END AS source,
        CASE WHEN p.activation_lock IS NOT NULL THEN from_iso8601_timestamp(p.activation_lock.last_collected_at)
             ELSE from_iso8601_timestamp(dd.fetched_at) END AS reported_at
    FROM latest_devices d
    LEFT JOIN latest_posture p ON p.device_id = d.device_id
    LEFT JOIN latest_device_details dd ON dd.device_id = d.device_id
    WHERE d.platform IN ('Mac', 'iPhone', 'iPad')
)
SELECT
    CASE WHEN by_user OR by_device THEN 'on' ELSE 'unknown' END AS status,
    *
FROM apple_devices
WHERE by_user OR by_device OR source IS NULL
ORDER BY status, device_name, serial_number"""),
)

# --- the tenant-wide tables (collect/tenant_sources.py, docs/tenant-sources.md) ---------------------
# Committed snapshots only, as everywhere: a tenant table's rows count when committed_snapshots has their
# snapshot. A snapshot table's latest rows are those of the latest committed snapshot (of the last three days)
# whose row lists the source in `tenant_sources_read`: a read that found nothing is the latest read, and its
# answer is empty (no threat left); a run whose token may not read the source, or whose read failed, does not
# list it, and leaves the last known rows standing. The latest read is taken from committed_snapshots, never
# from the table's rows: an empty read leaves no row to find.
# Rows written before the column existed (NULL) keep the rule of their time: such a snapshot read the source
# when it has rows in the table (an empty read of that time passes for no read). That matters only until the
# first snapshot recorded by this version reads the source (it is newer), and three days at most. Counting
# those snapshots as not having read would answer empty meanwhile: "no threat", unknown taken for false.
# Audit events are partitioned by the day they occurred, stored by a run at or after that day: the snapshot's
# day is bounded like the event's.
_DAYS_30 = "CAST(current_date - INTERVAL '30' DAY AS varchar)"


def _latest_read(table: str) -> str:
    return f"""WITH latest AS (
    SELECT max(s.snapshot_id) AS snapshot_id
    FROM committed_snapshots s
    WHERE s.dt >= {_RECENT}
      AND (contains(s.tenant_sources_read, '{table}')
           OR (s.tenant_sources_read IS NULL
               AND s.snapshot_id IN (SELECT r.snapshot_id FROM {table} r WHERE r.dt >= {_RECENT})))
)"""


def _audit_query(name: str, title: str, description: str, columns: str, conditions: str) -> FleetQuery:
    return FleetQuery(name, title, description, f"""SELECT
{columns}
FROM audit_events e
JOIN committed_snapshots s ON s.snapshot_id = e.snapshot_id AND s.dt >= {_DAYS_30}
WHERE e.dt >= {_DAYS_30}
{conditions}
ORDER BY e.occurred_at DESC, e.id""")


TENANT_QUERIES: tuple[FleetQuery, ...] = (
    _audit_query(
        "api_token_changes", "Kandji: API token changes of the last 30 days",
        "API tokens created, changed (their permissions) or deleted in the last 30 days, from the audit trail.",
        """    e.occurred_at,
    e.action,
    json_extract_scalar(e.new_state, '$.label') AS token_label,
    json_extract(e.new_state, '$.permissions') AS permissions,
    e.actor_type,
    e.actor_id,
    e.target_id,
    e.id AS event_id""",
        "  AND e.target_type = 'api_token'"),
    _audit_query(
        "library_items_removed_from_blueprints", "Kandji: library items removed from blueprints",
        "Audit events of the last 30 days that removed library items (profiles, apps, scripts) from a blueprint.",
        """    e.occurred_at,
    json_extract_scalar(e.new_state, '$.name') AS blueprint_name,
    json_extract(e.new_state, '$.library_items_removed') AS library_items_removed,
    e.actor_type,
    e.actor_id,
    e.target_id AS blueprint_id,
    e.id AS event_id""",
        """  AND e.target_type = 'blueprint'
  AND json_array_length(json_extract(e.new_state, '$.library_items_removed')) > 0"""),
    FleetQuery(
        "devices_with_critical_cve", "Kandji: devices with a critical CVE",
        "Devices of the latest committed vulnerability read with a CVE of CVSS 9 or more, or on CISA's KEV list.",
        _latest_read("vulnerability_detections") + f"""
SELECT
    v.device_name,
    v.device_serial_number,
    v.cve_id,
    v.cvss_score,
    coalesce(k.kev_score, 0) > 0 AS on_kev,
    v.name AS software,
    v.version,
    v.first_detection_date,
    v.device_id
FROM vulnerability_detections v
JOIN latest l ON v.snapshot_id = l.snapshot_id
LEFT JOIN vulnerabilities k ON k.snapshot_id = v.snapshot_id AND k.cve_id = v.cve_id AND k.dt = v.dt
    AND k.dt >= {_RECENT}
WHERE v.dt >= {_RECENT}
  AND (v.cvss_score >= 9 OR coalesce(k.kev_score, 0) > 0)
ORDER BY v.cvss_score DESC, v.cve_id, v.device_name, v.device_id"""),
    FleetQuery(
        "threats_not_quarantined", "Kandji: threats not quarantined",
        "Threats of the latest committed threat read whose status is not QUARANTINED (released, allowed, ...), "
        "with who released them.",
        _latest_read("threats") + f"""
SELECT
    t.threat_name,
    t.classification,
    t.status,
    t.device_name,
    t.device_serial_number,
    t.file_path,
    t.released_by,
    t.date_of_release,
    t.detection_date,
    t.device_id
FROM threats t
JOIN latest l ON t.snapshot_id = l.snapshot_id
WHERE t.dt >= {_RECENT}
  AND t.status <> 'QUARANTINED'
ORDER BY t.detection_date DESC, t.device_id, t.threat_name"""),
)
QUERIES += TENANT_QUERIES

_BY_NAME = {query.name: query for query in QUERIES}


def by_name(name: str) -> FleetQuery:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no fleet query {name!r}; known: {', '.join(_BY_NAME)}") from None
