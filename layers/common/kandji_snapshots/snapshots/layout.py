"""Where everything lives in the bucket: Hive-style `dt=` partitions that Athena projects.

    snapshots/<table>/dt=YYYY-MM-DD/<snapshot_id>[-NNNNN].json.gz
    snapshots/manifests/dt=YYYY-MM-DD/<snapshot_id>/manifest.json   (written last: the commit)
    snapshots/committed_snapshots/dt=YYYY-MM-DD/<snapshot_id>.json.gz (Athena's record of the commit)
    changes/dt=YYYY-MM-DD/<snapshot_id>.json.gz
    changes/_published/<snapshot_id>/...                             (differ's progress markers)
    changes/_transitions/<previous_snapshot_id>.json                 (which snapshot diffed against it)
    changes/_digests/YYYY-MM-DD.json                                 (the daily digest of that day: sent?)
"""

from __future__ import annotations

import re

from kandji_snapshots.snapshots.timeutil import partition_date

SNAPSHOT_PREFIX = "snapshots/"
MANIFEST_PREFIX = "snapshots/manifests/"
# One JSON line per committed snapshot, written after its manifest: what Athena joins to read
# committed snapshots only (snapshots/committed.py).
COMMITTED_PREFIX = "snapshots/committed_snapshots/"
CHANGES_PREFIX = "changes/"
TABLE_NAMES = ("devices", "device_details", "device_apps", "device_posture")

# A snapshot id, `YYYYMMDDTHHMMSSZ` (timeutil.SNAPSHOT_ID_FORMAT): the one pattern every reader matches.
SNAPSHOT_ID_PATTERN = r"\d{8}T\d{6}Z"
_SNAPSHOT_ID = re.compile(SNAPSHOT_ID_PATTERN)
_MANIFEST_KEY = re.compile(rf"^snapshots/manifests/dt=(\d{{4}}-\d{{2}}-\d{{2}})/"
                           rf"({SNAPSHOT_ID_PATTERN})/manifest\.json$")


def is_snapshot_id(text: str) -> bool:
    return _SNAPSHOT_ID.fullmatch(text) is not None


def table_part_key(table: str, snapshot_id: str, part: int | None, day: str | None = None) -> str:
    """`day`: the partition when it is not the snapshot's (audit events go by the day they occurred)."""
    suffix = "" if part is None else f"-{part:05d}"
    return f"{SNAPSHOT_PREFIX}{table}/dt={day or partition_date(snapshot_id)}/{snapshot_id}{suffix}.json.gz"


def audit_claim_key(base_snapshot_id: str | None, attempt: int) -> str:
    """Which run continued the audit trail from `base_snapshot_id`'s state (`first`: none yet); created once."""
    return f"{SNAPSHOT_PREFIX}_audit/continued/{base_snapshot_id or 'first'}.{attempt}.json"


def fingerprints_key(snapshot_id: str) -> str:
    """The snapshot's per-device fingerprints (diff/fingerprints.py), listed in its manifest."""
    return f"{SNAPSHOT_PREFIX}fingerprints/dt={partition_date(snapshot_id)}/{snapshot_id}.tsv.gz"


def manifest_key(snapshot_id: str) -> str:
    return f"{MANIFEST_PREFIX}dt={partition_date(snapshot_id)}/{snapshot_id}/manifest.json"


def committed_key(snapshot_id: str) -> str:
    return f"{COMMITTED_PREFIX}dt={partition_date(snapshot_id)}/{snapshot_id}.json.gz"


def manifest_day_prefix(day: str) -> str:
    return f"{MANIFEST_PREFIX}dt={day}/"


def snapshot_id_from_manifest_key(key: str) -> str | None:
    match = _MANIFEST_KEY.match(key)
    if not match or partition_date(match.group(2)) != match.group(1):
        return None
    return match.group(2)


def changes_key(snapshot_id: str) -> str:
    return f"{CHANGES_PREFIX}dt={partition_date(snapshot_id)}/{snapshot_id}.json.gz"


def published_marker_prefix(snapshot_id: str) -> str:
    return f"{CHANGES_PREFIX}_published/{snapshot_id}/"


def transition_key(previous_snapshot_id: str | None) -> str:
    """Who diffed against `previous_snapshot_id` (`first`: the first snapshot); written once."""
    return f"{CHANGES_PREFIX}_transitions/{previous_snapshot_id or 'first'}.json"


def digest_marker_key(day: str) -> str:
    """Whether the daily digest of `day` (YYYY-MM-DD, UTC) is being sent or was sent; claimed once."""
    return f"{CHANGES_PREFIX}_digests/{day}.json"


# --- the columnar history copy (history/): Parquet written by Athena, partitions dt=/snapshot_id= ----------
#   history/<table>/dt=YYYY-MM-DD/snapshot_id=<snapshot_id>/<files>   (Hive layout, as Athena's INSERT writes it)
#   history/_attempts/<table>/<snapshot_id>.json                       (the Athena query that copies it)
HISTORY_PREFIX = "history/"


def history_table_prefix(table: str) -> str:
    return f"{HISTORY_PREFIX}{table}/"


def history_partition_prefix(table: str, snapshot_id: str) -> str:
    return f"{history_table_prefix(table)}dt={partition_date(snapshot_id)}/snapshot_id={snapshot_id}/"


def history_attempt_key(table: str, snapshot_id: str) -> str:
    return f"{HISTORY_PREFIX}_attempts/{table}/{snapshot_id}.json"
