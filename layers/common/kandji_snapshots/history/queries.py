"""The saved history questions, in Athena's dialect only (template.yaml holds them verbatim as named queries;
the local twin runs the same text through sqlglot: history.local_copy).

Each names the device in every table it reads (`device_id = '...'`): that equality is what lets Athena read
one bucket file in 16 of each partition. Placeholders: Athena's saved queries cannot take parameters, so the
text carries an example value to edit everywhere it appears; the local twin fills in its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from kandji_snapshots.history.tables import sql_literal

EXAMPLE_DEVICE_ID = "00000000-0000-0000-0000-000000000000"
EXAMPLE_AT = "2026-11-23 10:00:00"  # UTC


@dataclass(frozen=True)
class HistoryQuery:
    name: str
    title: str  # the Athena named query's Name
    description: str
    template: str  # {device_id} and {at}: SQL literals

    def sql(self, device_id: str = EXAMPLE_DEVICE_ID, at: str = EXAMPLE_AT) -> str:
        return self.template.format(device_id=sql_literal(device_id), at=sql_literal(at))

    @property
    def athena_sql(self) -> str:
        return self.sql()


_DEVICE_POSTURE_HISTORY = """WITH readings AS (
    SELECT
        p.snapshot_id,
        p.filevault.status AS filevault_on,
        p.application_firewall.status AS firewall_on,
        from_iso8601_timestamp(p.filevault.last_collected_at) AS filevault_reported_at,
        from_iso8601_timestamp(p.application_firewall.last_collected_at) AS firewall_reported_at
    FROM device_posture_history p
    WHERE p.dt >= date_format(current_date - INTERVAL '90' DAY, '%Y-%m-%d')
      AND p.device_id = {device_id}
), marked AS (
    SELECT
        r.*,
        lag(r.snapshot_id) OVER (ORDER BY r.snapshot_id) AS previous_snapshot_id,
        lag(r.filevault_on) OVER (ORDER BY r.snapshot_id) AS filevault_before,
        lag(r.firewall_on) OVER (ORDER BY r.snapshot_id) AS firewall_before
    FROM readings r
)
SELECT
    m.snapshot_id,
    m.filevault_on,
    m.firewall_on,
    m.filevault_reported_at,
    m.firewall_reported_at
FROM marked m
WHERE m.previous_snapshot_id IS NULL
   OR m.filevault_on IS DISTINCT FROM m.filevault_before
   OR m.firewall_on IS DISTINCT FROM m.firewall_before
ORDER BY m.snapshot_id"""

# The snapshot in force at T: the newest copied one at or before T, looked for in T's day and the day before.
_DEVICE_AT_TIME = """WITH at AS (
    SELECT max(p.snapshot_id) AS snapshot_id
    FROM device_posture_history p
    WHERE p.dt >= date_format(TIMESTAMP {at} - INTERVAL '1' DAY, '%Y-%m-%d')
      AND p.dt <= date_format(TIMESTAMP {at}, '%Y-%m-%d')
      AND p.snapshot_id <= date_format(TIMESTAMP {at}, '%Y%m%dT%H%i%sZ')
      AND p.device_id = {device_id}
)
SELECT
    d.snapshot_id,
    d.serial_number,
    d.device_name,
    p.filevault.status AS filevault_on,
    p.application_firewall.status AS firewall_on,
    p.startup_settings.sip AS sip_on,
    p.gatekeeper_and_xprotect.gatekeeper_status AS gatekeeper_on,
    dd.filevault.filevault_enabled AS details_filevault_enabled,
    d.platform,
    d.os_version,
    d.blueprint_name,
    d."user".email AS user_email,
    d.agent_installed,
    dd.mdm.supervised AS supervised,
    from_iso8601_timestamp(d.last_check_in) AS last_check_in,
    (SELECT count(*) FROM device_apps_history a
     WHERE a.dt = d.dt AND a.snapshot_id = d.snapshot_id AND a.device_id = {device_id}) AS app_count
FROM devices_history d
JOIN at ON d.snapshot_id = at.snapshot_id
LEFT JOIN device_posture_history p
  ON p.dt = d.dt AND p.snapshot_id = d.snapshot_id AND p.device_id = d.device_id AND p.device_id = {device_id}
LEFT JOIN device_details_history dd
  ON dd.dt = d.dt AND dd.snapshot_id = d.snapshot_id AND dd.device_id = d.device_id AND dd.device_id = {device_id}
WHERE d.dt >= date_format(TIMESTAMP {at} - INTERVAL '1' DAY, '%Y-%m-%d')
  AND d.dt <= date_format(TIMESTAMP {at}, '%Y-%m-%d')
  AND d.device_id = {device_id}"""

HISTORY_QUERIES: tuple[HistoryQuery, ...] = (
    HistoryQuery(
        "device_posture_history", "Kandji: FileVault and firewall history of one device",
        "When one device's FileVault or firewall changed over the last 90 days, from the Parquet history "
        f"(device_posture_history): edit the device id ('{EXAMPLE_DEVICE_ID}'; latest inventory lists it). "
        "Reads one bucket file per snapshot, a few columns of it.",
        _DEVICE_POSTURE_HISTORY),
    HistoryQuery(
        "device_at_time", "Kandji: one device at time T",
        "What one device looked like at a past time T (UTC), from the Parquet history: the snapshot in force at T "
        f"(the newest at or before T, within a day). Edit the device id ('{EXAMPLE_DEVICE_ID}') and the time "
        f"('{EXAMPLE_AT}') everywhere they appear.",
        _DEVICE_AT_TIME),
)


def history_query(name: str) -> HistoryQuery:
    for query in HISTORY_QUERIES:
        if query.name == name:
            return query
    raise KeyError(f"no history query {name!r}; known: {', '.join(query.name for query in HISTORY_QUERIES)}")
