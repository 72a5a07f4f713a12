"""Run the Athena views and saved queries with DuckDB over a local snapshot folder (what `LocalObjectStore` writes).

    from kandji_snapshots.query import local_duckdb
    rows = local_duckdb.run_query("local-data", "filevault_off")          # list of dicts
    print(local_duckdb.format_table(rows))
    kandji-snapshots query local-data [--query NAME] [--param bundle_id=...]
    (or python -m kandji_snapshots.query.local_duckdb local-data ... where the package is installed)

The folder is read the way Athena reads the bucket: one DuckDB view per Glue table
(`devices`, `device_details`, `device_apps`, `device_posture`, `committed_snapshots`,
`changes`) over the gzip JSON Lines files below `<prefix>dt=*/`, with `dt` taken from the
folder name (hive partitioning, kept as text like in Athena). Every column's type is given
(from `athena_sql.TABLE_COLUMNS`), never guessed from the data, so the types are the same
whatever the folder holds; timestamps and JSON sections are text, as in Athena. A table with
no files yet (no differ run: no `changes/`) is an empty view with the same columns.

On top of them come the Athena views (`latest_devices`, ...), and the saved queries run as
they are: the SQL is athena_sql's Athena text, translated by sqlglot (read="athena",
write="duckdb"). Where the two engines give one name different meanings, the translation is
corrected here, never in a second copy of the SQL:

* `date_diff(unit, a, b)`: Trino counts whole units elapsed, DuckDB's `date_diff` counts unit
  boundaries crossed (23:00 -> 01:00 is 1 day in DuckDB, 0 in Trino): it becomes DuckDB's
  `date_sub`, which counts whole units like Trino;
* `from_iso8601_timestamp`: a macro returning the UTC time as a naive TIMESTAMP (the session
  runs in UTC), so Python reads it without a time zone library;
* `with_timezone(ts, 'UTC')`: a macro returning `ts` (already UTC); the queries use no other zone.

DuckDB and sqlglot are development dependencies (the CLI's `local` extra), not part of the
Lambda layer: they are imported only when a connection is made.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

from kandji_snapshots.inert_text import one_line
from kandji_snapshots.query import athena_sql
from kandji_snapshots.query.athena_sql import PARTITION_KEY, TABLE_COLUMNS, TABLE_PREFIXES, FleetQuery
from kandji_snapshots.snapshots.layout import MANIFEST_PREFIX
from kandji_snapshots.snapshots.schema import Type, spell

_SCALARS = {
    "string": "VARCHAR",
    "boolean": "BOOLEAN",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "timestamp": "VARCHAR",  # ISO 8601 text, parsed in SQL with from_iso8601_timestamp()
    "json": "VARCHAR",  # JSON text, as in Athena: json_extract_string() and friends read it
}

# Athena functions DuckDB lacks, under their Athena names. The session runs in UTC, so the naive
# TIMESTAMP returned is UTC (and Python fetches it without a time zone library).
_MACROS = (
    "CREATE OR REPLACE MACRO from_iso8601_timestamp(s) AS CAST(CAST(s AS TIMESTAMPTZ) AS TIMESTAMP)",
    "CREATE OR REPLACE MACRO with_timezone(ts, zone) AS CAST(ts AS TIMESTAMP)",
)


@lru_cache(maxsize=256)
def translate(athena: str) -> str:
    """Athena (Trino) SQL as DuckDB runs it: sqlglot's translation, with the meanings that differ corrected."""
    import sqlglot  # dev dependency only: never imported in Lambda
    from sqlglot import exp

    def same_meaning(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.DateDiff):  # Trino: whole units elapsed; DuckDB's date_sub counts the same
            unit = node.args.get("unit")
            return exp.Anonymous(this="date_sub", expressions=[
                exp.Literal.string(unit.name.lower() if unit is not None else "day"), node.expression, node.this])
        if isinstance(node, exp.FromISO8601Timestamp):  # the macro above, not a TIMESTAMPTZ cast
            return exp.Anonymous(this="from_iso8601_timestamp", expressions=[node.this])
        return node

    (tree,) = sqlglot.parse(athena, read="athena")
    return tree.transform(same_meaning).sql(dialect="duckdb")


def duckdb_type(kind: Type) -> str:
    """The DuckDB type a column of logical type `kind` is read as."""
    return spell(kind, _SCALARS, "{}[]", "STRUCT({})", '"{name}" {type}', ", ")


def duckdb_columns(table: str) -> dict[str, str]:
    return {name: duckdb_type(kind) for name, kind in TABLE_COLUMNS[table].items()}


def table_files(root: str | Path, table: str) -> list[Path]:
    """The data files of one table: `<prefix>dt=YYYY-MM-DD/*.json.gz`, in key order."""
    base = Path(root) / TABLE_PREFIXES[table]
    if not base.is_dir():
        return []
    return sorted(path for path in base.glob(f"{PARTITION_KEY}=*/*.json.gz") if path.is_file())


def view_sql(root: str | Path, table: str) -> str:
    """`CREATE VIEW <table>` over the table's files, or an empty view when it has none."""
    columns = duckdb_columns(table)
    files = table_files(root, table)
    if not files:
        selected = ", ".join(f"CAST(NULL AS {kind}) AS {_ident(name)}" for name, kind in columns.items())
        return (f"CREATE OR REPLACE VIEW {table} AS SELECT {selected}, "
                f"CAST(NULL AS VARCHAR) AS {PARTITION_KEY} WHERE false")
    file_list = "[" + ", ".join(_literal(path.as_posix()) for path in files) + "]"
    column_map = "{" + ", ".join(f"{_literal(name)}: {_literal(kind)}" for name, kind in columns.items()) + "}"
    return (f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_json({file_list}, "
            f"format = 'newline_delimited', compression = 'gzip', hive_partitioning = true, "
            f"hive_types = {{{_literal(PARTITION_KEY)}: 'VARCHAR'}}, columns = {column_map})")


def session(con: Any) -> Any:
    """A DuckDB connection set to run translated Athena SQL: UTC, and the macros for Athena's functions."""
    con.execute("SET TimeZone = 'UTC'")
    for macro in _MACROS:
        con.execute(macro)
    return con


def connect(root: str | Path, connection: Any = None) -> Any:
    """A DuckDB connection over `root`: a view per table, the helper macros, then the Athena views."""
    import duckdb  # dev dependency only: never imported in Lambda

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of snapshots (run the collector locally first)")
    con = session(connection if connection is not None else duckdb.connect())
    for table in TABLE_COLUMNS:
        con.execute(view_sql(root, table))
    for view in athena_sql.VIEWS:
        con.execute(f"CREATE OR REPLACE VIEW {view.name} AS {translate(view.sql)}")
    return con


def query_rows(con: Any, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    cursor = con.execute(sql, dict(parameters)) if parameters else con.execute(sql)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def run_query(root_or_connection: Any, query: str | FleetQuery, **parameters: Any) -> list[dict[str, Any]]:
    """Run one saved query (by name or object), its Athena text with `parameters` put in, over a folder or
    an open connection."""
    fleet_query = athena_sql.by_name(query) if isinstance(query, str) else query
    sql = fleet_query.with_values(**{name: str(value) for name, value in parameters.items()})
    con = connect(root_or_connection) if isinstance(root_or_connection, (str, Path)) else root_or_connection
    return query_rows(con, translate(sql))


def run_all(root: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Every saved query with its example values: name -> rows."""
    con = connect(root)
    return {query.name: run_query(con, query) for query in athena_sql.QUERIES}


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
                 max_width: int = 40, limit: int | None = None) -> str:
    """Rows as a plain text table (one line per row, cells cut at `max_width`)."""
    if columns is None:
        columns = list(rows[0]) if rows else []
    if not columns:
        return "(no rows)"
    shown = list(rows if limit is None else rows[:limit])
    cells = [[_cell(row.get(column), max_width) for column in columns] for row in shown]
    widths = [max([len(column)] + [len(line[index]) for line in cells]) for index, column in enumerate(columns)]
    lines = [" | ".join(column.ljust(width) for column, width in zip(columns, widths)).rstrip(),
             "-+-".join("-" * width for width in widths)]
    lines += [" | ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    if not rows:
        lines.append("(no rows)")
    elif limit is not None and len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows")
    return "\n".join(lines)


def print_report(root: str | Path, names: Iterable[str] | None = None, *, out: TextIO | None = None,
                 limit: int | None = 20,
                 parameters: Mapping[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run queries (all by default) and print each as a titled text table; returns the rows.

    `parameters` apply to the queries that take them (bundle_id, serial_number, days, at). A query whose
    required parameter is not given is not run (its example names no device of yours): a line says
    which `--param` it needs.
    """
    out = out if out is not None else sys.stdout
    con = _readable_errors(connect, root)
    notice = _readable_errors(why_latest_is_empty, con, root)
    if notice:
        print(notice, file=out)
    results = {}
    for name in names or [query.name for query in athena_sql.QUERIES]:
        query = athena_sql.by_name(name)
        accepted = {key: value for key, value in (parameters or {}).items()
                    if key in {parameter.name for parameter in query.parameters}}
        missing = [parameter for parameter in query.parameters if parameter.required and parameter.name not in accepted]
        if missing:
            print(f"\n== {query.title}: not run, it needs " + " and ".join(
                f"--param {parameter.name}=... (for example {parameter.name}={parameter.default})"
                for parameter in missing), file=out)
            continue
        rows = _readable_errors(run_query, con, query, **accepted)
        results[name] = rows
        settings = {**query.defaults(), **accepted}
        suffix = "".join(f" [{key}={one_line(value)}]" for key, value in settings.items())
        print(f"\n== {query.title}{suffix}: {len(rows)} row{'s' if len(rows) != 1 else ''}", file=out)
        print(format_table(rows, limit=limit), file=out)
    return results


class QueryFailed(Exception):
    """DuckDB could not answer over this folder (a damaged file, say): what it said, in one line."""


def _readable_errors(function: Any, *args: Any, **kwargs: Any) -> Any:
    import duckdb

    try:
        return function(*args, **kwargs)
    except duckdb.Error as error:
        first_line = one_line(str(error).splitlines()[0] if str(error) else type(error).__name__, 300)
        raise QueryFailed(f"DuckDB could not answer: {first_line}. Check that the folder holds snapshots "
                          "written by `collect` or `make local`, undamaged (gzip JSON Lines).") from None


def why_latest_is_empty(con: Any, root: str | Path) -> str | None:
    """Why the latest_* views hold nothing, when the folder holds snapshots: they read, as in Athena, only
    snapshots recorded in committed_snapshots in the last three days."""
    if con.execute("SELECT count(*) FROM latest_devices").fetchone()[0]:
        return None
    newest = con.execute("SELECT max(snapshot_id) FROM committed_snapshots").fetchone()[0]
    if newest is not None:
        return (f"note: the newest committed snapshot, {newest}, is older than the three days the latest_* views and "
                "the saved queries read (as in Athena): their answers are empty. Collect again for current answers.")
    if any(Path(root, MANIFEST_PREFIX).glob("dt=*/*/manifest.json")):
        return (f"note: {root} holds snapshots committed before committed_snapshots existed: the views and saved "
                f"queries see none of them until `kandji-snapshots backfill-committed {root}` records them.")
    return None


def _cell(value: Any, max_width: int) -> str:
    if value is None:
        text = ""
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="seconds")
    elif isinstance(value, date):
        text = value.isoformat()
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    else:
        text = str(value)
    return one_line(text, max_width)  # one line per row; names from the fleet may hold terminal escapes


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def queries_help() -> str:
    """Every query with its parameters, for `--help`."""
    lines = ["queries (--query NAME) and their parameters (--param NAME=VALUE):"]
    for query in athena_sql.QUERIES:
        lines.append(f"  {query.name:<24} {query.title.removeprefix('Kandji: ')}")
        for parameter in query.parameters:
            need = "required" if parameter.required else f"default {parameter.default}"
            lines.append(f"  {'':<24}   --param {parameter.name}=...  ({need}; for example "
                         f"{parameter.name}={parameter.default})")
    lines.append("Without --query every query runs; one that needs a parameter you did not give is not run.")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kandji-snapshots query` (and of `python -m kandji_snapshots.query.local_duckdb`)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = queries_help()
    parser.add_argument("folder", help="a folder written by `kandji-snapshots collect` or the local run "
                                       "(holds snapshots/ and changes/)")
    parser.add_argument("--query", action="append", choices=[query.name for query in athena_sql.QUERIES],
                        metavar="NAME", help="a query to run (repeatable; default: all; the list is below)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a query parameter, e.g. bundle_id=org.mozilla.firefox or serial_number=C02...")
    parser.add_argument("--limit", type=int, default=20, help="rows shown per query (default 20)")


class BadParameters(ValueError):
    """`--param` or `--query` do not fit together: a usage error (exit code 2)."""


def parse_parameters(items: Sequence[str], names: Sequence[str] | None) -> dict[str, str]:
    """`--param NAME=VALUE` items checked against the queries to run (all when `names` is empty): each is
    NAME=VALUE, names a parameter of one of them, is given once and has a value of the parameter's form;
    every required parameter of a query asked for by name is there. Raises BadParameters saying what to
    type instead."""
    queries = [athena_sql.by_name(name) for name in names] if names else list(athena_sql.QUERIES)
    known = {parameter.name: parameter for query in queries for parameter in query.parameters}
    parameters: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise BadParameters(f"--param {item!r} is not NAME=VALUE, for example --param bundle_id=com.google.Chrome.")
        if name not in known:
            takes = ", ".join(sorted(known)) or "none"
            which = f"--query {', '.join(names)}" if names else "any query"
            raise BadParameters(f"--param {name}: {which} takes no parameter {name!r} (parameters: {takes}). "
                                "See --help for each query's parameters.")
        if name in parameters:
            raise BadParameters(f"--param {name} is given twice.")
        try:
            known[name].render(value.strip())
        except ValueError as error:
            raise BadParameters(f"--param {name}={value!r}: {error} "
                                f"(for example {name}={known[name].default}).") from None
        parameters[name] = value.strip() if known[name].strip_value else value
    for query in queries if names else ():
        for parameter in query.parameters:
            if parameter.required and parameter.name not in parameters:
                raise BadParameters(f"--query {query.name} needs --param {parameter.name}=VALUE (for example "
                                    f"--param {parameter.name}={parameter.default}); it is not run on the example.")
    return parameters


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The query command: BadParameters for a usage error, QueryFailed when DuckDB cannot read the folder."""
    parameters = parse_parameters(args.param, args.query)
    print_report(args.folder, args.query, limit=args.limit, parameters=parameters, out=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kandji_snapshots.query.local_duckdb",
        description="Run the saved Athena queries over a local snapshot folder with DuckDB.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BadParameters as error:
        parser.error(str(error))
    except QueryFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
