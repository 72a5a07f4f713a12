"""Raw Kandji payloads in, rows with one stable type per column out.

Kandji sends the same field as `"True"`, `true` or `""`, timestamps in five
forms, `user` as an object or `""`, and sections that come and go by platform.
Athena needs every column to have one type on every platform, so each value is
coerced to the type `schema` declares. Nothing is dropped silently: a field the
schema does not know, or a value that does not fit its type, is kept verbatim in
the row's `extra` column (a JSON object keyed by the field's dotted path).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from kandji_snapshots.snapshots import schema
from kandji_snapshots.snapshots.schema import Array, Scalar, Struct, Type
from kandji_snapshots.snapshots.timeutil import normalize_timestamp

_TRUE = frozenset({"true", "yes", "1", "on", "enabled"})
_FALSE = frozenset({"false", "no", "0", "off", "disabled"})


class _Unfit(Exception):
    """The value cannot be expressed in the declared type."""


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == {} or (isinstance(value, str) and not value.strip())


def _scalar(value: Any, kind: Scalar) -> Any:
    if kind.name == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float, str)):
            return str(value).strip() or None
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if kind.name == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).strip().lower() in _TRUE:
            return True
        if isinstance(value, (str, int)) and str(value).strip().lower() in _FALSE:
            return False
        raise _Unfit
    if kind.name == "bigint":
        if isinstance(value, bool):
            raise _Unfit
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise _Unfit
    if kind.name == "double":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _Unfit from None
        if isinstance(value, bool) or not math.isfinite(number):
            raise _Unfit
        return number
    if kind.name == "timestamp":
        stamp = normalize_timestamp(value)
        if stamp is None:
            raise _Unfit
        return stamp
    if kind.name == "json":
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    raise AssertionError(f"unknown scalar type {kind.name}")


def coerce(value: Any, kind: Type, path: str, extra: dict[str, Any]) -> Any:
    """Coerce one value to `kind`; what does not fit goes to `extra[path]`."""
    if _is_empty(value) or (isinstance(value, list) and not value and isinstance(kind, Struct)):
        return None
    try:
        if isinstance(kind, Scalar):
            return _scalar(value, kind)
        if isinstance(kind, Array):
            if not isinstance(value, list):
                raise _Unfit
            return [coerce(item, kind.item, f"{path}[{index}]", extra) for index, item in enumerate(value)]
        if isinstance(kind, Struct):
            if not isinstance(value, dict):
                raise _Unfit
            return coerce_fields(value, kind.fields, path, extra)
    except _Unfit:
        extra[path] = value
        return None
    raise AssertionError(f"unknown type {kind!r}")


def coerce_fields(raw: dict[str, Any], fields: dict[str, Type], prefix: str, extra: dict[str, Any]) -> dict[str, Any]:
    out = {name: coerce(raw.get(name), kind, f"{prefix}{'.' if prefix else ''}{name}", extra)
           for name, kind in fields.items()}
    for name, value in raw.items():
        if name not in fields and not _is_empty(value):
            extra[f"{prefix}{'.' if prefix else ''}{name}"] = value
    return out


def _row(raw: dict[str, Any], columns: dict[str, Type], fixed: dict[str, Any]) -> dict[str, Any]:
    """Build one row: fixed columns first (keys, fetched_at), then the payload's fields."""
    extra: dict[str, Any] = {}
    payload_columns = {name: kind for name, kind in columns.items() if name not in fixed and name != "extra"}
    payload = {key: value for key, value in raw.items() if key not in fixed}
    body = coerce_fields(payload, payload_columns, "", extra)
    row = {name: fixed[name] if name in fixed else body.get(name) for name in columns if name != "extra"}
    row["extra"] = json.dumps(extra, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if extra else None
    return row


def device_row(raw: dict[str, Any], snapshot_id: str) -> dict[str, Any]:
    return _row(raw, schema.DEVICES, {"snapshot_id": snapshot_id, "device_id": str(raw["device_id"])})


def details_row(raw: dict[str, Any], snapshot_id: str, device_id: str, fetched_at: str) -> dict[str, Any]:
    fixed = {"snapshot_id": snapshot_id, "device_id": device_id, "fetched_at": fetched_at}
    return _row(raw, schema.DEVICE_DETAILS, fixed)


def posture_row(categories: dict[str, dict[str, Any] | None], snapshot_id: str, device_id: str,
                fetched_at: str) -> dict[str, Any]:
    """One device's Prism posture: {category: that category's columns (or None)} -> a device_posture row."""
    fixed = {"snapshot_id": snapshot_id, "device_id": device_id, "fetched_at": fetched_at}
    return _row(categories, schema.DEVICE_POSTURE, fixed)


def app_sort_key(row: dict[str, Any]) -> tuple[str, ...]:
    """Apps of one device in a stable order: identity (bundle id, path) first."""
    return tuple(row.get(name) or "" for name in ("bundle_id", "path", "version", "app_name", "app_id"))


def app_rows(raw_apps: Iterable[dict[str, Any]], snapshot_id: str, device_id: str,
             fetched_at: str) -> list[dict[str, Any]]:
    fixed = {"snapshot_id": snapshot_id, "device_id": device_id, "fetched_at": fetched_at}
    rows = [_row(app, schema.DEVICE_APPS, fixed) for app in raw_apps]
    rows.sort(key=app_sort_key)
    return rows


def encode_row(row: dict[str, Any]) -> bytes:
    """One JSON Lines line. Column order is the schema's, so equal rows encode equally."""
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
