"""Rows as flattened fields, the fields that changed between two rows, and the raw-bytes shortcut.

`field_changes` parses and compares two rows of a table field by field. `VolatileValues`
lets the differ skip that for rows that differ only in check-in noise
(diff/rules.py, DEFAULT_IGNORED_FIELDS): it cuts those values out of the raw bytes when that is
provably safe, so a fleet that only checked in again costs no JSON parsing at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from kandji_snapshots.diff.rules import ChangeRules
from kandji_snapshots.snapshots import schema
from kandji_snapshots.snapshots.schema import Array, Scalar, Struct, Type

# Columns that describe the snapshot, not the device: never compared.
_PREFIX_COLUMNS = frozenset({"snapshot_id", "device_id", "fetched_at"})
_JSON_COLUMNS = {table: frozenset(name for name, kind in columns.items() if kind == schema.JSON)
                 for table, columns in schema.TABLES.items()}
# A details column whose name is also a devices column is reported as `details.<name>`;
# `extra` is not reported itself: its fields are, as `extra.<path>` (see row_fields).
_FIELD_NAMES = {
    "devices": {},
    "device_details": {name: f"details.{name}" for name in schema.DEVICE_DETAILS
                       if name in schema.DEVICES and name not in _PREFIX_COLUMNS and name != "extra"},
    # Prism posture fields are reported as `posture.<category>.<column>` (diff/posture_changes.py).
    "device_posture": {name: f"posture.{name}" for name in schema.DEVICE_POSTURE if name not in _PREFIX_COLUMNS},
}


def _flatten(value: Any, path: str, out: dict[str, Any], elements: dict[str, Any]) -> None:
    """Leaves by dotted path; arrays of objects keyed by each element's `name`, else its index.

    `elements` collects those array elements by path, so an element that appears or goes
    is reported as one change rather than one per leaf.
    """
    if value is None:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{path}.{key}", out, elements)
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        used: set[str] = set()
        for index, item in enumerate(value):
            name = item.get("name")
            key = str(name) if isinstance(name, (str, int)) and str(name) != "" and str(name) not in used \
                else str(index)
            used.add(key)
            elements[f"{path}.{key}"] = item
            _flatten(item, f"{path}.{key}", out, elements)
    elif value != [] and value != "":
        out[path] = value


def row_fields(table: str, row: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A devices or device_details row as ({dotted field: value}, {array element path: element}).

    JSON-text columns are parsed and flattened too, `extra` among them: its keys are the
    dotted paths in the API of fields the schema has no column for, so each comes out as
    `extra.<path>` and is compared, ignored and reported on its own.
    """
    fields: dict[str, Any] = {}
    elements: dict[str, Any] = {}
    if row is None:
        return fields, elements
    json_columns = _JSON_COLUMNS[table]
    names = _FIELD_NAMES[table]
    for column, value in row.items():
        if column in _PREFIX_COLUMNS or value is None:
            continue
        name = names.get(column, column)
        if column in json_columns:
            try:
                value = json.loads(value)
            except (TypeError, ValueError):
                pass  # not JSON after all: compare the text
        _flatten(value, name, fields, elements)
    return fields, elements


def _same(before: Any, after: Any) -> bool:
    return before == after and type(before) is type(after)


def field_changes(rules: ChangeRules, table: str, before: dict[str, Any] | None,
                  after: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The changes between two rows of a table, in column order, ignored fields left out."""
    old, old_elements = row_fields(table, before)
    new, new_elements = row_fields(table, after)
    # Array elements present on one side only (a profile installed, a volume gone): one change each.
    whole = sorted(old_elements.keys() ^ new_elements.keys())
    whole = [path for path in whole if not any(path.startswith(f"{outer}.") for outer in whole)]
    changes = []
    reported: set[str] = set()
    for name in dict.fromkeys([*old, *new]):
        element = next((path for path in whole if name.startswith(f"{path}.")), None) if whole else None
        if element is not None:
            if element not in reported and not rules.is_ignored(element):
                reported.add(element)
                changes.append(_change(rules, element, old_elements.get(element), new_elements.get(element)))
            continue
        was, now = old.get(name), new.get(name)
        if not _same(was, now) and not rules.is_ignored(name):
            changes.append(_change(rules, name, was, now))
    return changes


def _change(rules: ChangeRules, name: str, before: Any, after: Any) -> dict[str, Any]:
    severity, reason = rules.assess(name, before, after)
    change = {"field": name, "before": _scalar_or_text(before), "after": _scalar_or_text(after),
              "severity": severity}
    if reason:
        change["reason"] = reason
    return change


def _scalar_or_text(value: Any) -> Any:
    """Objects and lists (an `extra`, a whole profile) as JSON text: Athena reads before/after as strings."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return value


class VolatileValues:
    """Cuts the values of always-changing fields out of a raw row, so two rows compare without parsing.

    A key is cut only when every scalar field of the table with that key name is ignored:
    inside JSON-text columns every quote is escaped, so `"key":` only matches real keys.
    Values that are not plain strings or null are left in place: rows that differ there are parsed.
    Columns after the last one that can hold such a key (a Mac's ~10 KB of `users` JSON text) are
    not scanned, only compared: `tail_column` names the first of them.
    """

    def __init__(self, keys: Iterable[str], tail_column: str | None = None):
        self.keys = tuple(sorted(keys))
        # Rows are encoded in schema order, so `,"<column>":` (quote unescaped) starts that column.
        self._tail = f',"{tail_column}":'.encode() if tail_column else None
        names = b"|".join(re.escape(key.encode()) for key in self.keys)
        # A key and its value when that is a string without escapes, or null. Other values stay,
        # so rows that differ in them are parsed and compared properly.
        self._values = re.compile(rb'"(?:' + names + rb')":(?:"[^"\\]*"|null)')

    @classmethod
    def for_table(cls, table: str, rules: ChangeRules) -> "VolatileValues | None":
        leaves: dict[str, list[tuple[str, str]]] = {}
        for column, path, key in _scalar_leaves(schema.TABLES[table], _FIELD_NAMES.get(table, {})):
            leaves.setdefault(key, []).append((column, path))
        keys = [key for key, paths in leaves.items() if all(rules.is_ignored(path) for _, path in paths)]
        if not keys:
            return None
        columns = list(schema.TABLES[table])
        last = max(columns.index(column) for key in keys for column, _ in leaves[key])
        return cls(keys, columns[last + 1] if last + 1 < len(columns) else None)

    def strip(self, line: bytes, start: int) -> bytes:
        cut = line.find(self._tail, start) if self._tail else -1
        if cut < 0:
            return self._values.sub(b"", line[start:])
        return self._values.sub(b"", line[start:cut]) + line[cut:]


def _scalar_leaves(columns: dict[str, Type], names: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """(column, field path, key name) of every scalar in a table; array elements under sample keys."""
    def walk(kind: Type, path: str, key: str) -> Iterator[tuple[str, str]]:
        if isinstance(kind, Struct):
            for name, item in kind.fields.items():
                yield from walk(item, f"{path}.{name}", name)
        elif isinstance(kind, Array) and isinstance(kind.item, Struct):
            for sample in ("0", "Sample Volume"):  # an element is keyed by index or by name
                yield from walk(kind.item, f"{path}.{sample}", key)
        elif isinstance(kind, Scalar):
            yield path, key
    for column, kind in columns.items():
        if column not in _PREFIX_COLUMNS:
            yield from ((column, path, key) for path, key in walk(kind, names.get(column, column), column))


_INVENTORY_NOISE = VolatileValues(("app_id", "creation_date", "modification_date"))
# An app row's body is encoded in schema order with every column: `"app_id":…,"app_name":…,…,
# "creation_date":…,"modification_date":…,"path":…`. So the three are cut by slicing between the keys
# around them, which costs a third of the key-by-key cut. `,"key":` is always a key: a quote inside a
# value is escaped. A body of any other shape (say, an older column order) is cut key by key.
_AFTER_APP_ID, _DATES, _AFTER_DATES = b',"app_name":', b',"creation_date":', b',"path":'


def without_inventory_noise(body: bytes) -> bytes:
    """An app row's body without the values Kandji renumbers and restamps at every inventory."""
    name = body.find(_AFTER_APP_ID)
    dates = body.find(_DATES, name)
    after = body.find(_AFTER_DATES, dates)
    if 0 < name < dates < after and body.startswith(b'"app_id":'):
        return body[name:dates] + body[after:]
    return _INVENTORY_NOISE.strip(body, 0)
