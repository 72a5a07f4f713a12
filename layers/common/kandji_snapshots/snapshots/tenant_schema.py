"""Columns of the tenant-wide tables (collect/tenant_sources.py, collect/audit.py): the same declarations
drive normalization and the Glue tables, like schema.py's device tables.

`audit_events` is an event log, partitioned by the day each event occurred and holding each event once;
the others are snapshot tables (every row again each run, partitioned by the snapshot's day).
"""

from __future__ import annotations

from kandji_snapshots.snapshots.schema import (
                                               BIGINT,
                                               BOOLEAN,
                                               DOUBLE,
                                               JSON,
                                               STRING,
                                               TIMESTAMP,
                                               Array,
                                               Type,
                                               booleans,
                                               strings,
                                               struct,
)

AUDIT_EVENTS: dict[str, Type] = {
    "snapshot_id": STRING,  # the run that stored the event
    "id": STRING,  # a ULID
    "action": STRING,
    "occurred_at": TIMESTAMP,
    **strings("actor_id", "actor_type", "target_id", "target_type", "target_component"),
    "new_state": JSON,  # its shape depends on the target: kept whole
    "metadata": JSON,
    "extra": JSON,
}

THREATS: dict[str, Type] = {
    "snapshot_id": STRING,
    "device_id": STRING,
    **strings("threat_name", "classification", "status", "process_name", "process_owner", "device_name",
              "device_serial_number"),
    "detection_date": TIMESTAMP,
    "date_of_quarantine": TIMESTAMP,
    "date_of_release": TIMESTAMP,
    **strings("released_by", "release_note", "file_path", "file_hash", "bundle_path", "blueprint_id",
              "blueprint_name", "library_item_name", "library_item_id", "pup_posture", "malware_posture"),
    "extra": JSON,
}

VULNERABILITY_DETECTIONS: dict[str, Type] = {
    "snapshot_id": STRING,
    "device_id": STRING,
    **strings("device_name", "device_serial_number", "device_model", "device_os_version", "blueprint_id",
              "blueprint_name", "name", "version", "path", "bundle_id", "cve_id", "cve_description", "cve_link"),
    "cvss_score": DOUBLE,
    "cvss_severity": STRING,
    "first_detection_date": TIMESTAMP,
    "latest_detection_date": TIMESTAMP,
    "extra": JSON,
}

VULNERABILITIES: dict[str, Type] = {
    "snapshot_id": STRING,
    "cve_id": STRING,
    "severity": STRING,
    "cvss_score": DOUBLE,
    "kev_score": DOUBLE,  # 0, or more when the CVE is on CISA's Known Exploited Vulnerabilities list
    "cve_link": STRING,
    "first_detection_date": TIMESTAMP,
    "latest_detection_date": TIMESTAMP,
    "device_count": BIGINT,
    "software": Array(STRING),
    "status": STRING,
    "extra": JSON,
}

USERS: dict[str, Type] = {
    "snapshot_id": STRING,
    **strings("id", "email", "name"),
    **booleans("active", "archived"),
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
    **strings("department", "job_title", "deprecated_user_id"),  # a device's user.id may still be the old id
    "device_count": BIGINT,
    "integration": struct(**strings("id", "name", "uuid", "type")),
    "extra": JSON,
}

BLUEPRINTS: dict[str, Type] = {
    "snapshot_id": STRING,
    **strings("id", "name", "icon", "color", "description"),
    "params": JSON,
    "computers_count": BIGINT,
    "type": STRING,
    # Only whether enrolment by code is on: the code itself enrols devices, a credential never stored.
    "enrollment_code": struct(is_active=BOOLEAN),
    "extra": JSON,
}

TENANT_TABLES: dict[str, dict[str, Type]] = {
    "audit_events": AUDIT_EVENTS,
    "threats": THREATS,
    "vulnerability_detections": VULNERABILITY_DETECTIONS,
    "vulnerabilities": VULNERABILITIES,
    "users": USERS,
    "blueprints": BLUEPRINTS,
}

# What a row of each snapshot table is about: the collector orders a table's rows by it
# (collect/tenant_sources.py) and the differ compares them run to run by it (diff/tenant_changes.py).
ROW_IDENTITY: dict[str, tuple[str, ...]] = {
    "threats": ("device_id", "file_hash", "threat_name"),
    "vulnerability_detections": ("device_id", "cve_id", "name", "path", "version"),
    "vulnerabilities": ("cve_id",),
    "users": ("id",),
    "blueprints": ("id",),
}
