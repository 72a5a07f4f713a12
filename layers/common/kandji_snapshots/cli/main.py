"""The operator's command line, `kandji-snapshots` (installed by `pip install .` or `pipx install .`):

    kandji-snapshots check   --url https://<tenant>.api.kandji.io [--token-file FILE | --secret-id ARN]
    kandji-snapshots collect --url https://<tenant>.api.kandji.io --output DIR
    kandji-snapshots diff    DIR-or-s3://BUCKET [--from SNAPSHOT_ID] [--to SNAPSHOT_ID] [--json]
    kandji-snapshots query   DIR [--query NAME] [--param NAME=VALUE]        (DuckDB: the [local] extra)
    kandji-snapshots backfill-committed DIR-or-s3://BUCKET      (once after an upgrade: Athena's committed rows)

The token is never a command-line argument (it would land in shell history): it comes from
--secret-id (the stack's Secrets Manager secret, read like the Lambda reads it), --token-file,
the environment variable KANDJI_API_TOKEN, or a hidden prompt, in that order. It is never
printed. Exit codes, the same for every command: 0 success; 1 the command ran and failed or found a
problem (the message says what to fix); 2 the command line is wrong (see UsageError).

This module is the parser, the dispatch to a command and the exit codes. The rest of cli/:
    console      stdout/stderr with the token redacted, log records, UsageError, the command's name
    credentials  where the token and URL come from (secret, file, environment, prompt)
    check        the `check` command: probes, permissions, device count (cost: a run's cost)
    collect      the `collect` command
    diff         the `diff` command, as a table or JSON Lines
    backfill     the `backfill-committed` command
    rate_limit   the hourly rate-limit headers, read by check and collect
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kandji_snapshots.cli.backfill import run_backfill
from kandji_snapshots.cli.check import run_check
from kandji_snapshots.cli.collect import run_collect
from kandji_snapshots.cli.console import COMMAND, PROG, Console, UsageError, configure_logging, for_terminal
from kandji_snapshots.cli.cost import cost_lines
from kandji_snapshots.cli.credentials import TOKEN_ENV
from kandji_snapshots.cli.diff import run_diff
from kandji_snapshots.diff.rules import IGNORE_FIELDS_ENV
from kandji_snapshots.errors import ConfigurationError, KandjiSnapshotsError
from kandji_snapshots.kandji.config import EXPECTED_FORM
from kandji_snapshots.query import local_duckdb
from kandji_snapshots.settings import (
    API_URL_ENV,
    APPS_SOURCES,
    DEFAULT_HOURLY_RESERVE,
    DEFAULT_MAX_WORKERS,
    DEFAULT_REQUEST_BUDGET,
    DEFAULT_REQUESTS_PER_SECOND,
    INSECURE_LOCALHOST_ENV,
)

# cost_lines stays importable from here, where it was before the split.
__all__ = ["build_parser", "cost_lines", "main"]


# --- command line -------------------------------------------------------------------------------------

def _positive_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be between 0.1 and 1000 (Kandji enforces 50/s)")
    return value


def _budget(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of requests (1 or more), or 'none' for no cap")
    return int(text)


def _count(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().isdigit() or not minimum <= int(text) <= maximum:
            raise argparse.ArgumentTypeError(f"{text!r}: a whole number from {minimum} to {maximum}")
        return int(text)
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors become UsageError (exit code 2) with no value from the command line in
    them: a token pasted after the wrong option, or alone, must not be printed back."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}. See {self.prog} --help.\n{self.format_usage().rstrip()}")


def _without_values(message: str, argv: Sequence[str], known_words: set[str]) -> str:
    """An argparse message with the values typed on the command line left out (option names, command names
    and choices stay): a token typed after an unknown option, or alone, is never printed back."""
    prefix = "unrecognized arguments: "
    if message.startswith(prefix):
        unknown, _, rest = message[len(prefix):].partition(". See ")
        items = unknown.split(" ")
        options = [item.split("=", 1)[0] for item in items if item.startswith("-")]
        values = sum(not item.startswith("-") or "=" in item for item in items)
        parts = [f"unrecognized option{'s' if len(options) > 1 else ''} {', '.join(options)}"] if options else []
        if values:
            parts.append(f"{values} unexpected value{'s' if values > 1 else ''} (not shown: it may be a token)")
        message = "; ".join(parts) + (f". See {rest}" if rest else "")
    for item in argv:
        value = item.split("=", 1)[1] if item.startswith("-") and "=" in item else item
        if len(value) >= 6 and not value.startswith("-") and value not in known_words:
            message = message.replace(value, "<not shown>")
    return message


def _known_words(parser: argparse.ArgumentParser) -> set[str]:
    """Command names and the choices of every option, which an error may name."""
    words: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                words |= _known_words(command)
        words |= {str(choice) for choice in action.choices or ()}
    return words


class _RefuseToken(argparse.Action):
    """`--token VALUE` would put the token in shell history: refuse it without echoing it."""

    def __call__(self, parser, namespace, values, option_string=None):
        raise UsageError("The token is never taken on the command line (it would land in shell history): use "
                         f"--token-file FILE, --secret-id ARN, the environment variable {TOKEN_ENV}, or the prompt.")


def _kandji_options() -> argparse.ArgumentParser:
    parent = _Parser(add_help=False, allow_abbrev=False)
    group = parent.add_argument_group("Kandji API and token")
    group.add_argument("--url", metavar="API_URL",
                       help=f"the tenant's API URL, {EXPECTED_FORM} (default: ${API_URL_ENV}; with --secret-id, the "
                            "secret's api_url wins, as in the Lambda)")
    group.add_argument("--token-file", metavar="FILE", help="read the token from FILE ('-': standard input)")
    group.add_argument("--secret-id", metavar="ARN_OR_NAME",
                        help="read the token (and API URL) from this Secrets Manager secret, like the collector "
                             "Lambda: JSON {\"api_url\", \"api_token\"} or the bare token (AWS credentials from "
                             "the usual AWS_PROFILE / AWS_REGION)")
    group.add_argument("--token", nargs="?", action=_RefuseToken, help=argparse.SUPPRESS)
    group.add_argument("--allow-insecure-localhost", action="store_true",
                       help=f"accept http://127.0.0.1:PORT (the simulator), like {INSECURE_LOCALHOST_ENV}=true")
    group.add_argument("--max-requests-per-second", type=_positive_rate, default=DEFAULT_REQUESTS_PER_SECOND,
                       metavar="N", help=f"request rate ceiling (default {DEFAULT_REQUESTS_PER_SECOND:g}; Kandji "
                                         "enforces 50)")
    return parent


def _common_options() -> argparse.ArgumentParser:
    parent = _Parser(add_help=False, allow_abbrev=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="log the package's debug messages and show tracebacks")
    return parent


def _snapshot_source() -> argparse.ArgumentParser:
    """The SOURCE the commands that read snapshots take: a folder or a bucket."""
    parent = _Parser(add_help=False, allow_abbrev=False)
    parent.add_argument("source", metavar="SOURCE", help="a folder written by `collect`, or s3://BUCKET")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Operator commands of kandji-snapshots: check a token, collect once into a folder, diff "
                    "two snapshots, query a folder.",
        epilog=f"The token comes from --secret-id, --token-file, ${TOKEN_ENV} or a hidden prompt, never from "
               "the command line.\nExit codes, the same for every command: 0 success; 1 the command ran and failed "
               "or found a problem (the message says what to fix); 2 the command line is wrong (an unknown option, a "
               "malformed value, a folder that does not exist, a parameter no query takes).")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="log the package's debug messages and show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    kandji, common, source = _kandji_options(), _common_options(), _snapshot_source()

    def add_command(name: str, handler: Callable[..., int], **options: Any) -> argparse.ArgumentParser:
        command = commands.add_parser(name, allow_abbrev=False, **options)
        command.set_defaults(handler=handler)
        return command

    check = add_command(
        "check", run_check, parents=[kandji, common],
        help="check the API URL and token: permissions, device count, rate-limit headroom, cost of a run",
        description="Validate the API URL, call each endpoint the collector needs once, and report which "
                    "permissions the token has, the device count, the rate-limit headroom and what a full run "
                    "costs. Exit code 0 when the collector has everything it needs, 1 otherwise.")
    check.add_argument("--apps-source", choices=APPS_SOURCES, default="per-device",
                       help="the KANDJI_APPS_SOURCE the collector will use, which decides whether Device apps "
                            "or Prism: apps is required (default per-device)")

    collect = add_command(
        "collect", run_collect, parents=[kandji, common],
        help="take one snapshot into a local folder (no AWS account needed)",
        description="Take one snapshot of the tenant with the collector the Lambda uses, into a local folder "
                    "laid out like the bucket (snapshots/<table>/dt=.../). Run again later and `diff` the folder.")
    collect.add_argument("--output", "-o", required=True, metavar="DIR", help="the folder to write to")
    collect.add_argument("--apps-source", choices=APPS_SOURCES, default="per-device",
                         help="per-device (default), prism (fleet-wide, one request per 300 apps) or auto")
    collect.add_argument("--budget", type=_budget, default=DEFAULT_REQUEST_BUDGET, metavar="N",
                         help=f"most requests this run may send (default {DEFAULT_REQUEST_BUDGET:,}, as the Lambda; "
                              "'none' for no cap); devices past it are carried forward or left pending")
    collect.add_argument("--hourly-reserve", type=_count(0, 1_000_000), default=DEFAULT_HOURLY_RESERVE, metavar="N",
                         help=f"of the tenant's hourly limit, leave this many for other integrations "
                              f"(default {DEFAULT_HOURLY_RESERVE:,})")
    collect.add_argument("--max-workers", type=_count(1, 64), default=DEFAULT_MAX_WORKERS, metavar="N",
                         help=f"requests in flight (default {DEFAULT_MAX_WORKERS})")
    collect.add_argument("--progress", action="store_true",
                         help="show the progress bar on stderr even when it is not a terminal")

    diff = add_command(
        "diff", run_diff, parents=[common, source],
        help="the changes between two snapshots, in a folder or in S3 (publishes nothing)",
        description="Print the change events between two committed snapshots, as the differ computes them "
                    "(nothing is published). Default: the latest snapshot against the one before it.")
    diff.add_argument("--from", dest="from_id", metavar="SNAPSHOT_ID",
                      help="the older snapshot (default: the one before --to)")
    diff.add_argument("--to", dest="to_id", metavar="SNAPSHOT_ID", help="the newer snapshot (default: the latest)")
    diff.add_argument("--json", action="store_true", help="one change event per line (JSON Lines), as published")
    diff.add_argument("--ignore-fields", metavar="PATTERNS",
                      help=f"more fields to ignore, comma-separated fnmatch patterns (default: ${IGNORE_FIELDS_ENV})")

    add_command(
        "backfill-committed", run_backfill, parents=[common, source],
        help="once after an upgrade: record the snapshots committed before in Athena's committed_snapshots",
        description="Write the committed_snapshots row of every committed snapshot (manifest) that has none: "
                    "Athena's views and saved queries read a snapshot only through that row. Safe to repeat.")

    query = add_command(
        "query", run_query, parents=[common],
        help="answer the saved fleet questions over a local folder with DuckDB (the [local] extra)",
        description="Run the saved Athena queries (their Athena text, translated for DuckDB by sqlglot) over a "
                    "folder written by `collect` or `make local`. Needs DuckDB and sqlglot: pip install '.[local]'.")
    local_duckdb.add_arguments(query)
    return parser


def run_query(args: argparse.Namespace, console: Console, environ: Mapping[str, str]) -> int:
    if importlib.util.find_spec("duckdb") is None or importlib.util.find_spec("sqlglot") is None:
        raise ConfigurationError("query needs DuckDB and sqlglot, which are not installed here: pip install '.[local]' "
                                 f"in the project folder (pipx: pipx inject {COMMAND} duckdb sqlglot).")
    if not Path(args.folder).is_dir():
        raise UsageError(f"{args.folder} is not a folder. Give a folder written by `collect` or `make local`.")
    try:
        return local_duckdb.run(args)
    except local_duckdb.BadParameters as error:
        raise UsageError(str(error)) from None
    except local_duckdb.QueryFailed as error:
        raise ConfigurationError(f"{args.folder}: {error}") from None


# --- entry point ---------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    console = Console()
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        console.err(f"error: {_without_values(str(error), argv, _known_words(parser))}")
        return 2
    except SystemExit as exit_:  # argparse: --help (0), already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    debug = bool(getattr(args, "debug", False))
    restore = configure_logging(debug, console)
    try:
        return args.handler(args, console, environ)
    except UsageError as error:
        console.err(f"error: {error}")
        return 2
    except KeyboardInterrupt:
        console.err("interrupted")
        return 130
    except BrokenPipeError:  # `... | head`: the reader is gone, and that is fine
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as error:  # noqa: BLE001 - every failure becomes one readable line
        if debug:
            console.err(traceback.format_exc().rstrip())
        console.err(f"error: {_describe_error(error)}")
        return 1
    finally:
        restore()


def _describe_error(error: Exception) -> str:
    if isinstance(error, KandjiSnapshotsError):
        return for_terminal(str(error))  # written for the operator, who is at a terminal here
    module = type(error).__module__ or ""
    if module.startswith(("botocore", "boto3")):
        return f"AWS: {error}"
    if isinstance(error, OSError):
        return f"{error.strerror or error}" + (f": {error.filename}" if getattr(error, "filename", None) else "")
    return f"{type(error).__name__}: {error} (run with --debug for the traceback)"
