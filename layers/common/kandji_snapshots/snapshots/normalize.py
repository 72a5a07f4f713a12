"""Raw Kandji payloads in, rows with one stable type per column out.

Kandji sends the same field as `"True"`, `true` or `""`, timestamps in five
forms, `user` as an object or `""`, "No value" for a value it does not have, and
sections that come and go by platform (or are `{}`, as on Windows and Android).
Athena needs every column to have one type on every platform, so each value is
coerced to the type `schema` declares. Nothing is dropped silently: a field the
schema does not know, or a value that does not fit its type, is kept verbatim in
the row's `extra` column (a JSON object keyed by the field's dotted path).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable
from typing import Any

from kandji_snapshots.snapshots import schema
from kandji_snapshots.snapshots.schema import Array, Scalar, Struct, Type
from kandji_snapshots.snapshots.timeutil import looks_like_timestamp, normalize_timestamp

logger = logging.getLogger(__name__)

_TRUE = frozenset({"true", "yes", "1", "on", "enabled"})
_FALSE = frozenset({"false", "no", "0", "off", "disabled"})


class _Unfit(Exception):
    """The value cannot be expressed in the declared type."""


# Kandji's placeholder for "not reported" (an app's version, for one): the same as no value.
NO_VALUE = "No value"


def _is_empty(value: Any) -> bool:
    return value is None or value == {} or (isinstance(value, str) and value.strip() in ("", NO_VALUE))


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
            try:
                return int(value)
            except ValueError:  # digits int() does not take (`²`), or more than 4,300 of them
                raise _Unfit from None
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
    _report_unrepresentable_timestamps(extra, columns, fixed.get("device_id"))
    row["extra"] = json.dumps(extra, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if extra else None
    return row


def source_row(raw: dict[str, Any], columns: dict[str, Type], snapshot_id: str) -> dict[str, Any]:
    """A row of a tenant-wide table (snapshots/tenant_schema.py), coerced like the device tables."""
    return _row(raw, columns, {"snapshot_id": snapshot_id})


def device_row(raw: dict[str, Any], snapshot_id: str) -> dict[str, Any]:
    raw = in_canonical_order(raw, SET_LIKE_LISTS["devices"])
    return _row(raw, schema.DEVICES, {"snapshot_id": snapshot_id, "device_id": str(raw["device_id"])})


def details_row(raw: dict[str, Any], snapshot_id: str, device_id: str, fetched_at: str) -> dict[str, Any]:
    fixed = {"snapshot_id": snapshot_id, "device_id": device_id, "fetched_at": fetched_at}
    return _row(in_canonical_order(raw, SET_LIKE_LISTS["device_details"]), schema.DEVICE_DETAILS, fixed)


def posture_row(categories: dict[str, dict[str, Any] | None], snapshot_id: str, device_id: str,
                fetched_at: str, carried_from: dict[str, str] | None = None) -> dict[str, Any]:
    """One device's Prism posture: {category: that category's columns (or None)} -> a device_posture row.
    `carried_from`: {category: when its carried value was read}, for the categories not read now."""
    fixed = {"snapshot_id": snapshot_id, "device_id": device_id, "fetched_at": fetched_at}
    return _row({**categories, "carried_from": carried_from or None}, schema.DEVICE_POSTURE, fixed)


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
    try:
        return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    except UnicodeEncodeError:  # rare, so looked for only when encoding fails
        row = _without_lone_surrogates(row)
        return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


# --- lists that are sets -------------------------------------------------------------------------------
# Kandji may serve these lists in a different order from one response to the next; their order means
# nothing. Sorted here, before coercion, so an unchanged device's row stays byte-identical between
# snapshots (the differ's raw-bytes shortcut) and order alone is never a change. Objects sort by the
# fields that identify them, never by values that move (a volume's free space), then by their whole
# JSON text. Path -> identifying fields (empty for lists of strings).
SET_LIKE_LISTS: dict[str, dict[tuple[str, ...], tuple[str, ...]]] = {
    "devices": {("tags",): ()},
    "device_details": {
        ("tags",): (),
        ("installed_profiles",): ("name", "identifier", "uuid"),
        ("volumes",): ("name", "identifier", "format"),
        ("mdm", "mdm_enabled_user"): (),
        ("users", "regular_users"): ("username", "uid"),
        ("users", "system_users"): ("username", "uid"),
        ("cellular", "subscriptions"): (),
    },
}


def in_canonical_order(raw: dict[str, Any], lists: dict[tuple[str, ...], tuple[str, ...]]) -> dict[str, Any]:
    """`raw` with each set-like list sorted; containers on the way are copied, `raw` is not changed."""
    for path, identity in lists.items():
        raw = _sorted_at(raw, path, identity)
    return raw


def _sorted_at(container: Any, path: tuple[str, ...], identity: tuple[str, ...]) -> Any:
    if not isinstance(container, dict) or path[0] not in container:
        return container
    value = container[path[0]]
    if len(path) > 1:
        replaced = _sorted_at(value, path[1:], identity)
    elif isinstance(value, list) and len(value) > 1:
        replaced = sorted(value, key=lambda item: _set_order_key(item, identity))
    else:
        return container
    return container if replaced is value else {**container, path[0]: replaced}


def _set_order_key(item: Any, identity: tuple[str, ...]) -> tuple[Any, ...]:
    if isinstance(item, dict):
        return (1, tuple(str(item.get(name) or "") for name in identity), _canonical_json(item))
    return (0, (), _canonical_json(item))  # strings and other scalars before objects, never compared across types


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


# --- values no row can hold ----------------------------------------------------------------------------
# One device's odd value must never stop the fleet's snapshot: such values are normalised, and the
# device and field are logged (never the value: it may be anything).

_SURROGATE = re.compile("[\ud800-\udfff]")


def _report_unrepresentable_timestamps(extra: dict[str, Any], columns: dict[str, Type], device_id: Any) -> None:
    """A timestamp column whose text is a timestamp but no representable instant (`0001-01-01T00:00:00+01:00`
    is in year 0 in UTC) is null, and its raw text stays in `extra` under the field's path, like every
    value that does not fit its column."""
    fields = [path for path, value in extra.items()
              if looks_like_timestamp(value) and _declared_type(columns, path) == schema.TIMESTAMP]
    if fields:
        logger.warning("timestamp out of range: written as null, its text kept in the row's extra column",
                       extra={"device_id": device_id, "fields": fields})


def _declared_type(columns: dict[str, Type], path: str) -> Type | None:
    """The schema type at a dotted field path such as `mdm.last_check_in` or `volumes[0].name`."""
    fields: dict[str, Type] | None = columns
    kind: Type | None = None
    for part in path.split("."):
        name = part.split("[", 1)[0]
        if fields is None or name not in fields:
            return None
        kind = fields[name]
        for _ in range(part.count("[")):
            if not isinstance(kind, Array):
                return None
            kind = kind.item
        fields = kind.fields if isinstance(kind, Struct) else None
    return kind


def _without_lone_surrogates(row: dict[str, Any]) -> dict[str, Any]:
    """A lone UTF-16 surrogate (half an emoji, sent as the JSON text "\\ud83d") cannot be written as
    UTF-8: each becomes U+FFFD, the replacement character."""
    fields: list[str] = []
    clean = _replace_surrogates(row, "", fields)
    logger.warning("lone UTF-16 surrogate (half an emoji) replaced with U+FFFD",
                   extra={"device_id": clean.get("device_id"), "fields": fields})
    return clean


def _replace_surrogates(value: Any, path: str, fields: list[str]) -> Any:
    if isinstance(value, str):
        if not _SURROGATE.search(value):
            return value
        fields.extend(_json_text_fields(value, path) or [path])
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            clean_key = _SURROGATE.sub("\ufffd", key) if isinstance(key, str) else key
            child = f"{path}.{clean_key}" if path else str(clean_key)
            if clean_key != key:
                fields.append(child)
            out[clean_key] = _replace_surrogates(item, child, fields)
        return out
    if isinstance(value, list):
        return [_replace_surrogates(item, f"{path}[{index}]", fields) for index, item in enumerate(value)]
    return value


def _json_text_fields(text: str, path: str) -> list[str]:
    """Within a JSON-text column (`extra`, `users`, ...), the fields holding surrogates."""
    if not text.startswith(("{", "[")):
        return []
    try:
        document = json.loads(text)
    except ValueError:
        return []
    fields: list[str] = []
    _replace_surrogates(document, path, fields)
    return fields
