"""`diff`: the change events between two committed snapshots in a folder or in S3, as the differ computes
them (nothing is published), printed as a table or as JSON Lines."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kandji_snapshots.cli.console import Console, UsageError
from kandji_snapshots.diff.differ import diff_snapshots
from kandji_snapshots.diff.events import CHANGE_TYPES, EventTally, encode_event
from kandji_snapshots.diff.rules import IGNORE_FIELDS_ENV, ChangeRules, parse_ignore_fields
from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.inert_text import NAME_MAX_CHARS, one_line
from kandji_snapshots.snapshots.catalog import (
    Manifest,
    committed_snapshot_ids,
    latest_snapshot_id,
    load_manifest,
    previous_snapshot_id,
)
from kandji_snapshots.snapshots.layout import MANIFEST_PREFIX, is_snapshot_id
from kandji_snapshots.snapshots.storage import LocalObjectStore, ObjectNotFound, ObjectStore, S3ObjectStore


def open_source(source: str) -> ObjectStore:
    if source.startswith("s3://"):
        bucket, _, rest = source[len("s3://"):].partition("/")
        if not bucket or rest.strip("/"):
            raise UsageError(f"{source!r}: an S3 source is s3://BUCKET, the stack's snapshot bucket, without a "
                             "prefix.")
        import boto3

        return S3ObjectStore(boto3.client("s3"), bucket)
    path = Path(source)
    if not path.is_dir():
        raise UsageError(f"{source} is not a folder. Give a folder written by `collect` (or the local run) "
                         "or s3://BUCKET.")
    return LocalObjectStore(path)


def _load(store: ObjectStore, snapshot_id: str, option: str) -> Manifest:
    try:
        return load_manifest(store, snapshot_id)
    except ObjectNotFound:
        known = committed_snapshot_ids(store)
        latest = f" The latest there: {', '.join(known[-5:])}." if known else ""
        raise ConfigurationError(f"{option} {snapshot_id}: no committed snapshot with that id in "
                                 f"{store.location} (no manifest).{latest}") from None
    except ValueError as error:
        raise ConfigurationError(f"{option} {snapshot_id}: {error}") from None


def run_diff(args: argparse.Namespace, console: Console, environ: Mapping[str, str]) -> int:
    for option, value in (("--from", args.from_id), ("--to", args.to_id)):
        if value is not None and not is_snapshot_id(value):
            raise UsageError(f"{option} {value!r} is not a snapshot id (YYYYMMDDTHHMMSSZ, as `collect` prints).")
    store = open_source(args.source)
    to_id = args.to_id or latest_snapshot_id(store)
    if to_id is None:
        raise ConfigurationError(f"{store.location} holds no snapshot (no manifest under {MANIFEST_PREFIX}).")
    current = _load(store, to_id, "--to")
    from_id = args.from_id or previous_snapshot_id(store, to_id)
    if from_id is None:
        raise ConfigurationError(f"{to_id} is the first snapshot in {store.location}: there is nothing before it "
                                 "to compare it with. Collect again later, or give --from.")
    if from_id == to_id:
        raise UsageError(f"--from and --to are the same snapshot ({to_id}): nothing to compare.")
    previous = _load(store, from_id, "--from")
    if from_id > to_id:
        console.err(f"note: --from {from_id} is newer than --to {to_id}: the changes go backwards in time.")

    ignore = args.ignore_fields if args.ignore_fields is not None else environ.get(IGNORE_FIELDS_ENV)
    rules = ChangeRules(parse_ignore_fields(ignore))
    events = diff_snapshots(store, previous, current, rules)
    if args.json:
        for event in events:
            console.out(encode_event(event))  # names from the fleet may hold escapes: the console neutralises them
        return 0
    console.out(f"changes from {from_id} to {to_id} in {store.location}")
    tally = EventTally()
    header_printed = False
    for event in events:
        if not header_printed:
            console.out(table_line(TABLE_HEADER))
            console.out(table_line({name: "-" * width for name, width in TABLE_WIDTHS.items()} | {"what": "-" * 40}))
            header_printed = True
        tally.add(event)
        console.out(table_line(table_row(event)))
    if not tally.total:
        console.out("no changes")
        return 0
    counts = ", ".join(f"{change_type} {tally.by_change_type[change_type]:,}" for change_type in CHANGE_TYPES
                       if tally.by_change_type.get(change_type))
    high = tally.by_severity.get("high", 0)
    console.out(f"{tally.total:,} change{'s' if tally.total != 1 else ''} ({high:,} high): {counts}")
    return 0


# --- the table -----------------------------------------------------------------------------------------

TABLE_WIDTHS = {"change": 14, "severity": 8, "platform": 8, "serial": 12, "device": 24}
TABLE_HEADER = {"change": "change", "severity": "severity", "platform": "platform", "serial": "serial",
                "device": "device", "what": "what"}


def table_line(cells: Mapping[str, str]) -> str:
    parts = [(_cut(cells.get(name) or "", width) if name == "device" else cells.get(name) or "").ljust(width)
             for name, width in TABLE_WIDTHS.items()]
    return ("  ".join(parts) + "  " + (cells.get("what") or "")).rstrip()


def table_row(event: Mapping[str, Any]) -> dict[str, str]:
    return {"change": event["change_type"], "severity": event["severity"], "platform": event.get("platform") or "",
            "serial": event.get("serial_number") or event["device_id"], "device": event.get("device_name") or "",
            "what": describe_event(event)}


def describe_event(event: Mapping[str, Any], max_changes: int = 4) -> str:
    """One line saying what changed: the fields with before -> after, the app and its versions, or the app count."""
    changes = event.get("changes")
    if changes:
        parts = []
        for change in changes[:max_changes]:
            text = f"{_cut(change['field'], 80)}: {_value(change.get('before'))} -> {_value(change.get('after'))}"
            if change.get("reason"):
                text += f" ({change['reason']})"
            parts.append(text)
        if len(changes) > max_changes:
            parts.append(f"+{len(changes) - max_changes} more")
        return "; ".join(parts)
    app = event.get("app")
    if app:
        name = _cut(app.get("app_name") or app.get("bundle_id") or app.get("path") or "?", NAME_MAX_CHARS)
        bundle = (f" ({_cut(app['bundle_id'], NAME_MAX_CHARS)})"
                  if app.get("bundle_id") and app.get("bundle_id") != name else "")
        if event["change_type"] == "app_updated":
            versions = f"{_cut(app.get('previous_version'), 40)} -> {_cut(app.get('version'), 40)}"
        elif event["change_type"] == "app_removed":
            versions = _cut(app.get("previous_version") or "", 40)
        else:
            versions = _cut(app.get("version") or "", 40)
        return f"{name}{bundle} {versions}".rstrip()
    if event.get("apps") is not None:
        count = len(event["apps"])
        return f"{count} app{'s' if count != 1 else ''}"
    return ""


def _value(value: Any, width: int = 40) -> str:
    return _cut(json.dumps(value, ensure_ascii=False, default=str), width)


def _cut(text: str, width: int) -> str:
    return one_line(text, width)
