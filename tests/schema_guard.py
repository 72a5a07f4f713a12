"""Checks that what the collector and the differ write is what Athena's tables declare.

Athena reads the bucket through the Glue tables of `template.yaml` with the Hive JSON
SerDe (`org.apache.hive.hcatalog.data.JsonSerDe`; the OpenX SerDe before), and both forgive
too much to be left unchecked:

* a key that is not a declared column (or struct field) is silently dropped;
* a boolean column may read a value other than `true`/`false` as false or NULL;
* a string where an array is declared may become a one-element array (OpenX);
* an empty or non-object line becomes a row of NULLs (OpenX).

So the guard takes the column types DECLARED IN THE TEMPLATE (Hive type strings,
nested `struct<...>`/`array<...>` included), and checks every row strictly against
them: JSON strings in string columns, JSON booleans in boolean columns, integers in
bigint columns, objects with only declared keys in structs, lists in arrays, NULL
anywhere. Given the logical types of `schema.TABLES` as well, it also checks that
`timestamp` columns hold ISO 8601 UTC text (`from_iso8601_timestamp` must parse it)
and `json` columns hold valid JSON text.

One relaxation, per the SerDe: the differ's `changes[].before`/`after` are declared
string but may hold any JSON scalar (the value as it was: true, 12, "14.5"). Trino's Hive
JSON deserializer reads a JSON scalar into a varchar column as its text (`parser.getText()`
for any scalar token; so did both OpenX implementations), so scalars are accepted
there. Objects and arrays are not: the two implementations render them differently,
and DuckDB differently again; the writer must stringify them.

Used by the tests only (it needs PyYAML to read the template, imported lazily).
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kandji_snapshots.snapshots import schema
from kandji_snapshots.snapshots.layout import SNAPSHOT_ID_PATTERN, is_snapshot_id
from kandji_snapshots.snapshots.schema import Array, Scalar, Struct, Type
from kandji_snapshots.snapshots.timeutil import partition_date

GLUE_TABLE = "AWS::Glue::Table"
HIVE_JSON_SERDE = "org.apache.hive.hcatalog.data.JsonSerDe"
PARTITION_KEY = "dt"

# Hive scalar types the guard understands, and the integer range of each.
_INTEGER_RANGES = {
    "tinyint": (-(2 ** 7), 2 ** 7 - 1),
    "smallint": (-(2 ** 15), 2 ** 15 - 1),
    "int": (-(2 ** 31), 2 ** 31 - 1),
    "bigint": (-(2 ** 63), 2 ** 63 - 1),
}
HIVE_SCALARS = frozenset({"string", "boolean", "double", "float", *_INTEGER_RANGES})

# Paths (inside a table's row) whose declared string may hold any JSON scalar: see the module doc.
SCALAR_AS_STRING_PATHS: dict[str, frozenset[str]] = {
    "changes": frozenset({"changes[].before", "changes[].after"}),
}

# What normalize writes for a `timestamp` (timeutil.ISO_FORMAT): fixed width, so text order = time order.
ISO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")

_DATA_KEY = re.compile(r"^(?:snapshots/(?P<table>[a-z_]+)/|changes/)dt=(?P<dt>\d{4}-\d{2}-\d{2})/"
                       r"(?P<snapshot_id>" + SNAPSHOT_ID_PATTERN + r")(?:-\d{5})?\.json\.gz$")


# --- Hive type strings ---------------------------------------------------------------

class HiveTypeError(ValueError):
    pass


_TOKEN = re.compile(r"\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[<>,:]))")


def parse_hive_type(text: str) -> Type:
    """`struct<a:string,b:array<struct<c:boolean>>>` -> the `schema` types (Struct/Array/Scalar)."""
    tokens = _tokenize(text)
    kind, position = _parse(tokens, 0, text)
    if position != len(tokens):
        raise HiveTypeError(f"unexpected {tokens[position]!r} after a complete type in {text!r}")
    return kind


def _tokenize(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            if text[position:].strip() == "":
                break
            raise HiveTypeError(f"cannot read {text[position:]!r} in Hive type {text!r}")
        tokens.append(match.group("word") or match.group("punct"))
        position = match.end()
    return tokens


def _expect(tokens: list[str], position: int, token: str, text: str) -> int:
    if position >= len(tokens) or tokens[position] != token:
        found = tokens[position] if position < len(tokens) else "the end"
        raise HiveTypeError(f"expected {token!r} but found {found!r} in Hive type {text!r}")
    return position + 1


def _parse(tokens: list[str], position: int, text: str) -> tuple[Type, int]:
    if position >= len(tokens):
        raise HiveTypeError(f"Hive type {text!r} ends too early")
    word = tokens[position].lower()
    if word == "array":
        position = _expect(tokens, position + 1, "<", text)
        item, position = _parse(tokens, position, text)
        return Array(item), _expect(tokens, position, ">", text)
    if word == "struct":
        position = _expect(tokens, position + 1, "<", text)
        fields: dict[str, Type] = {}
        while True:
            name = tokens[position] if position < len(tokens) else ""
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise HiveTypeError(f"expected a field name but found {name or 'the end'!r} in Hive type {text!r}")
            if name in fields:
                raise HiveTypeError(f"field {name!r} declared twice in Hive type {text!r}")
            position = _expect(tokens, position + 1, ":", text)
            fields[name], position = _parse(tokens, position, text)
            if position < len(tokens) and tokens[position] == ",":
                position += 1
                continue
            return Struct(fields), _expect(tokens, position, ">", text)
    if word in HIVE_SCALARS:
        return Scalar(word), position + 1
    raise HiveTypeError(f"unsupported Hive type {tokens[position]!r} in {text!r} "
                        f"(the guard knows {', '.join(sorted(HIVE_SCALARS))}, array<> and struct<>)")


# --- the template's Glue tables ------------------------------------------------------

@dataclass(frozen=True)
class GlueTable:
    """What the template declares of a table's rows: its columns and partition keys (parsed from their Hive
    types) and the SerDe that reads its files."""

    columns: dict[str, Type]
    partition_keys: dict[str, Type]
    serde: str  # StorageDescriptor.SerdeInfo.SerializationLibrary

    def hive_columns(self) -> dict[str, str]:
        return {name: kind.hive() for name, kind in self.columns.items()}


def glue_tables(template: Mapping[str, Any]) -> dict[str, GlueTable]:
    """Every AWS::Glue::Table of the template by table name, columns parsed from their Hive types."""
    tables: dict[str, GlueTable] = {}
    declared_by: dict[str, str] = {}  # table name -> the logical id declaring it
    for logical_id, resource in template.get("Resources", {}).items():
        if (resource.get("Type") != GLUE_TABLE
                or resource["Properties"]["TableInput"].get("TableType") == "VIRTUAL_VIEW"):
            continue  # views hold no rows: test_athena_template checks their columns
        table_input = resource["Properties"]["TableInput"]
        name = table_input["Name"]
        if not isinstance(name, str):
            raise ValueError(f"{logical_id}: the guard needs a literal TableInput.Name, found {name!r}")
        if name in declared_by:
            raise ValueError(f"two Glue tables named {name!r}: {declared_by[name]} and {logical_id}")
        declared_by[name] = logical_id

        def parse(items: Iterable[Mapping[str, Any]], what: str) -> dict[str, Type]:
            parsed: dict[str, Type] = {}
            for item in items:
                column = item["Name"]
                if column in parsed:
                    raise ValueError(f"{logical_id}: {what} {column!r} declared twice")
                try:
                    parsed[column] = parse_hive_type(item["Type"])
                except HiveTypeError as error:
                    raise ValueError(f"{logical_id}: {what} {column!r}: {error}") from None
            return parsed

        storage = table_input["StorageDescriptor"]
        tables[name] = GlueTable(
            columns=parse(storage["Columns"], "column"),
            partition_keys=parse(table_input.get("PartitionKeys", []), "partition key"),
            serde=storage["SerdeInfo"]["SerializationLibrary"])
    return tables


def load_glue_tables(template_path: str | Path) -> dict[str, GlueTable]:
    from tests.cfn_yaml import load_template  # PyYAML: a test-time dependency

    return glue_tables(load_template(template_path))


# --- checking rows ---------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    table: str
    path: str  # where in the row: `user.is_archived`, `volumes[0].encrypted`
    message: str
    where: str = ""  # the file (and line) it came from, when known

    def __str__(self) -> str:
        at = f" ({self.where})" if self.where else ""
        return f"{self.table}.{self.path}: {self.message}{at}" if self.path else f"{self.table}: {self.message}{at}"


class SchemaViolation(AssertionError):
    def __init__(self, problems: list[Problem], limit: int = 25):
        self.problems = problems
        shown = "\n  ".join(str(problem) for problem in problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(f"{len(problems)} problem(s) with what Athena would read:\n  {shown}{more}")


@dataclass
class GuardReport:
    rows: dict[str, int] = field(default_factory=dict)  # rows checked per table
    files: int = 0
    problems: list[Problem] = field(default_factory=list)

    def raise_if_any(self) -> None:
        if self.problems:
            raise SchemaViolation(self.problems)


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


class SchemaGuard:
    """Checks rows against declared column types (and, optionally, `schema`'s logical types)."""

    def __init__(self, tables: Mapping[str, Mapping[str, Type]], *,
                 logical: Mapping[str, Mapping[str, Type]] | None = None,
                 scalar_as_string: Mapping[str, Iterable[str]] = SCALAR_AS_STRING_PATHS,
                 complete_tables: Iterable[str] = ()):
        self.tables = {name: dict(columns) for name, columns in tables.items()}
        self.logical = {name: dict(columns) for name, columns in (logical or {}).items()}
        self.scalar_as_string = {name: frozenset(paths) for name, paths in scalar_as_string.items()}
        self.complete_tables = frozenset(complete_tables)  # every column must be present in every row

    @classmethod
    def from_template(cls, template_path: str | Path) -> "SchemaGuard":
        """The template's Glue tables, plus `schema`'s logical types for the three snapshot tables."""
        declared = {name: table.columns for name, table in load_glue_tables(template_path).items()}
        logical = {**schema.TABLES, "committed_snapshots": schema.COMMITTED_SNAPSHOTS}
        return cls(declared, logical=logical, complete_tables=logical)

    # -- one row ----------------------------------------------------------------------

    def check_row(self, table: str, row: Any, where: str = "") -> list[Problem]:
        problems: list[Problem] = []

        def report(path: str, message: str) -> None:
            problems.append(Problem(table, path, message, where))

        if table not in self.tables:
            report("", f"no Glue table {table!r} is declared (known: {', '.join(sorted(self.tables))})")
            return problems
        if not isinstance(row, dict):
            report("", f"a row must be a JSON object, got {_describe(row)}")
            return problems
        columns = self.tables[table]
        if PARTITION_KEY in row:
            report(PARTITION_KEY, "a row must not carry the partition key: Athena takes dt from the folder")
        self._check_fields(row, columns, "", report, self.scalar_as_string.get(table, frozenset()),
                           what="column")
        if table in self.complete_tables:
            for column in columns:
                if column not in row:
                    report(column, "declared column missing from the row (every row writes every column)")
        if table in self.logical:
            self._check_logical(row, Struct(self.logical[table]), "", report)
        return problems

    def _check_fields(self, value: dict[str, Any], fields: Mapping[str, Type], path: str, report,
                      lenient: frozenset[str], what: str) -> None:
        for key, item in value.items():
            where = _join(path, key)
            if key not in fields:
                lowered = [name for name in fields if name == key.lower()]
                hint = f" (declared as {lowered[0]!r}: keys are matched case-sensitively)" if lowered else ""
                report(where, f"not a declared {what}{hint}: Athena would silently drop it ({_describe(item)})")
                continue
            self._check_value(item, fields[key], where, report, lenient)

    def _check_value(self, value: Any, kind: Type, path: str, report, lenient: frozenset[str]) -> None:
        if value is None:
            return
        declared = kind.hive()
        if isinstance(kind, Struct):
            if not isinstance(value, dict):
                report(path, f"declared {declared}, got {_describe(value)}")
                return
            self._check_fields(value, kind.fields, path, report, lenient, what=f"field of {path}")
        elif isinstance(kind, Array):
            if not isinstance(value, list):
                report(path, f"declared {declared}, got {_describe(value)} (Athena would read a one-element array)")
                return
            for index, item in enumerate(value):
                self._check_value(item, kind.item, f"{path}[{index}]", report, lenient)
        else:
            problem = self._scalar_problem(value, kind.name, re.sub(r"\[\d+\]", "[]", path) in lenient)
            if problem:
                report(path, problem)

    @staticmethod
    def _scalar_problem(value: Any, name: str, scalar_as_string: bool) -> str | None:
        if name == "string":
            if isinstance(value, str):
                return None
            if scalar_as_string and _is_scalar(value):
                return None
            if scalar_as_string:
                return (f"declared string (any JSON scalar accepted here), got {_describe(value)}: objects and "
                        "arrays must be written as JSON text")
            return f"declared string, got {_describe(value)}"
        if name == "boolean":
            if isinstance(value, bool):
                return None
            return (f"declared boolean, got {_describe(value)}: Athena reads anything but a JSON true as "
                    "false")
        if name in _INTEGER_RANGES:
            low, high = _INTEGER_RANGES[name]
            if isinstance(value, int) and not isinstance(value, bool):
                return None if low <= value <= high else f"declared {name}, {value} is out of range"
            return f"declared {name}, got {_describe(value)}"
        if name in ("double", "float"):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return None
            return f"declared {name}, got {_describe(value)}"
        return f"the guard cannot check Hive type {name!r}"

    def _check_logical(self, value: Any, kind: Type, path: str, report) -> None:
        """The logical types behind Hive strings: timestamps and JSON text. Other mismatches are reported above."""
        if value is None:
            return
        if isinstance(kind, Struct) and isinstance(value, dict):
            for key, item in value.items():
                if key in kind.fields:
                    self._check_logical(item, kind.fields[key], _join(path, key), report)
        elif isinstance(kind, Array) and isinstance(value, list):
            for index, item in enumerate(value):
                self._check_logical(item, kind.item, f"{path}[{index}]", report)
        elif isinstance(kind, Scalar) and isinstance(value, str):
            if kind.name == "timestamp" and not ISO_TIMESTAMP.match(value):
                report(path, f"a timestamp must be ISO 8601 UTC text like 2026-11-23T10:15:00.000000Z, got "
                             f"{value!r}")
            elif kind.name == "json":
                try:
                    json.loads(value)
                except ValueError:
                    report(path, f"declared JSON text, but {value[:60]!r} is not valid JSON")

    # -- lines, files, folders -------------------------------------------------------------

    def check_line(self, table: str, line: bytes | str, where: str = "") -> tuple[Any, list[Problem]]:
        """Parse one JSON Lines line the way the SerDe must see it, then check the row."""
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        duplicates: list[str] = []

        def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            for key, value in pairs:
                if key in seen:
                    duplicates.append(key)
                seen[key] = value
            return seen

        def reject_constant(name: str) -> Any:
            raise ValueError(f"{name} is not JSON")

        if not text.strip():
            return None, [Problem(table, "", "empty line: Athena would read it as a row of NULLs", where)]
        try:
            row = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=reject_constant)
        except ValueError as error:
            return None, [Problem(table, "", f"not valid JSON ({error})", where)]
        problems = [Problem(table, "", f"duplicate key {key!r} (the JSON SerDes reject or mishandle duplicate keys)",
                            where)
                    for key in duplicates]
        return row, problems + self.check_row(table, row, where)

    def check_data_file(self, table: str, body: bytes, where: str = "", *,
                        dt: str | None = None, snapshot_id: str | None = None) -> tuple[int, list[Problem]]:
        """A gzip JSON Lines object: (rows, problems). Rows must belong to the file's dt and snapshot."""
        if not body.startswith(b"\x1f\x8b"):
            return 0, [Problem(table, "", "not gzip: the tables declare gzip (.json.gz) files", where)]
        try:
            text = gzip.decompress(body)
        except (OSError, EOFError) as error:
            return 0, [Problem(table, "", f"corrupt gzip ({error})", where)]
        problems: list[Problem] = []
        lines = text.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the newline that ends the last line
        for number, line in enumerate(lines, start=1):
            row, found = self.check_line(table, line, f"{where}:{number}" if where else f"line {number}")
            problems += found
            if isinstance(row, dict) and isinstance(row.get("snapshot_id"), str):
                if snapshot_id and row["snapshot_id"] != snapshot_id:
                    problems.append(Problem(table, "snapshot_id", f"row of snapshot {row['snapshot_id']} in the file "
                                                                  f"of snapshot {snapshot_id}", f"{where}:{number}"))
                elif dt and _partition_of(row["snapshot_id"]) != dt:
                    problems.append(Problem(table, "snapshot_id", f"snapshot {row['snapshot_id']} stored under dt={dt}",
                                            f"{where}:{number}"))
        return len(lines), problems

    def check_folder(self, root: str | Path) -> GuardReport:
        """Every data file below `snapshots/<table>/dt=*/` and `changes/dt=*/` of a local store folder."""
        root = Path(root)
        report = GuardReport(rows={name: 0 for name in self.tables})
        for key, table, dt, snapshot_id in _data_files(root):
            if table not in self.tables:
                report.problems.append(Problem(table, "", "files for a table that no Glue table declares", key))
                continue
            rows, problems = self.check_data_file(table, (root / key).read_bytes(), key, dt=dt, snapshot_id=snapshot_id)
            report.files += 1
            report.rows[table] = report.rows.get(table, 0) + rows
            report.problems += problems
        for stray in _stray_files(root):
            report.problems.append(Problem("?", "", "a file where Athena reads data, but not named "
                                                   "<prefix>dt=YYYY-MM-DD/<snapshot_id>[-NNNNN].json.gz", stray))
        return report

    def assert_rows(self, table: str, rows: Iterable[Any]) -> int:
        """Check rows (dicts) already in memory; raises SchemaViolation listing every problem."""
        problems: list[Problem] = []
        count = 0
        for count, row in enumerate(rows, start=1):
            problems += self.check_row(table, row, f"row {count}")
        if problems:
            raise SchemaViolation(problems)
        return count


def _partition_of(snapshot_id: str) -> str | None:
    return partition_date(snapshot_id) if is_snapshot_id(snapshot_id) else None


def _data_files(root: Path) -> Iterator[tuple[str, str, str, str]]:
    """(key, table, dt, snapshot_id) of every data object, in key order."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*.json.gz")):
        key = path.relative_to(root).as_posix()
        match = _DATA_KEY.match(key)
        if match:
            yield key, match.group("table") or "changes", match.group("dt"), match.group("snapshot_id")


def _stray_files(root: Path) -> Iterator[str]:
    """Files inside a table's dt= folders that do not follow the layout (Athena would read them too)."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if not path.is_file() or path.name.endswith(".partial") or "/dt=" not in key:
            continue
        # Beside the tables, not under any Glue table's location: the manifests, the differ's progress and the
        # fingerprint indexes (diff/fingerprints.py).
        if key.startswith(("snapshots/manifests/", "changes/_published/", "snapshots/fingerprints/")):
            continue
        if not _DATA_KEY.match(key):
            yield key
