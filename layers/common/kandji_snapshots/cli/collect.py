"""`collect`: one snapshot of the tenant into a local folder laid out like the bucket, with the collector
the Lambda uses, a progress bar on stderr and a summary of what was written."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import requests

from kandji_snapshots.cli.console import LOG_HANDLER, PROG, Console, UsageError
from kandji_snapshots.cli.credentials import resolve_credentials
from kandji_snapshots.cli.progress import ProgressBar, format_duration
from kandji_snapshots.cli.rate_limit import RateHeaders
from kandji_snapshots.collect.runtime import build_collector
from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.kandji.config import LOCAL_HOSTS
from kandji_snapshots.settings import CollectorSettings
from kandji_snapshots.snapshots.catalog import Manifest, latest_snapshot_id, load_manifest
from kandji_snapshots.snapshots.storage import LocalObjectStore, ObjectNotFound, ObjectStore


def run_collect(args: argparse.Namespace, console: Console, environ: Mapping[str, str]) -> int:
    credentials, source = resolve_credentials(args, console, environ)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file, not a folder.")
    store = LocalObjectStore(output)
    _refuse_other_tenant(store, credentials.endpoint.host)

    session = requests.Session()
    rate = RateHeaders(session)
    bar = None
    if args.progress or _isatty(sys.stderr):
        bar = ProgressBar(lambda: sys.stderr, interactive=_isatty(sys.stderr))
        LOG_HANDLER.bar = bar
    options = CollectorSettings(requests_per_second=args.max_requests_per_second, max_workers=args.max_workers,
                               request_budget=args.budget, hourly_reserve=args.hourly_reserve,
                               apps_source=args.apps_source)
    collector = build_collector(credentials, store, options, session=session, progress=bar).collector
    console.err(f"collecting from {credentials.endpoint.host} (token from {source}) into {output}")
    if bar:
        bar.status("reading the device list" + (" and Prism apps" if args.apps_source != "per-device" else ""))
    started = time.monotonic()
    try:
        manifest = collector.collect(correlation_id="cli")
    except KeyboardInterrupt:
        if bar:
            bar.finish()
        console.err("interrupted: nothing was committed (the parts written so far were deleted)")
        return 130
    finally:
        LOG_HANDLER.bar = None
        if bar:
            bar.finish()  # ends the bar's line, so an error message starts on its own
    _print_collected(console, manifest, output, rate, time.monotonic() - started)
    return 0


def _isatty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def _comparable_host(host: str) -> str:
    name = host.split(":")[0]
    return name if name in LOCAL_HOSTS else host  # a simulator's port changes per run


def _refuse_other_tenant(store: ObjectStore, host: str) -> None:
    """A folder holds one tenant: carrying rows forward or diffing across tenants would be nonsense."""
    latest = latest_snapshot_id(store)
    if latest is None:
        return
    try:
        previous_host = load_manifest(store, latest).document.get("api_host")
    except (ObjectNotFound, ValueError):
        return
    if previous_host and _comparable_host(previous_host) != _comparable_host(host):
        raise ConfigurationError(
            f"{store.location} holds snapshots of {previous_host}, not {host}: one folder holds one tenant. "
            "Use another --output folder.")


def _print_collected(console: Console, manifest: Manifest, output: Path, rate: RateHeaders, seconds: float) -> None:
    document = manifest.document
    requests_made = document.get("requests") or {}
    console.out(f"snapshot    {manifest.snapshot_id}")
    console.out(f"folder      {output.resolve()}")
    console.out(f"devices     {document['device_count']:,} written of {document['listed_devices']:,} listed: "
                f"{document['refreshed_devices']:,} refreshed, {document['carried_devices']:,} carried forward, "
                f"{document['pending_devices']:,} pending, {len(document['skipped_devices']):,} skipped")
    console.out(f"apps        {manifest.table_rows('device_apps'):,} rows ({document['apps_source']})")
    console.out(f"requests    {requests_made.get('total', 0):,} ({requests_made.get('retries', 0):,} retries, "
                f"{requests_made.get('rate_limited', 0):,} rate limited); rate limit: {rate.describe()}")
    console.out(f"took        {format_duration(seconds)}")
    if document["pending_devices"] or document["carried_devices"]:
        console.out("note        the request budget did not cover every device: the rest were carried forward "
                    "or are pending (details unknown). Run again later to refresh them, or raise --budget.")
    for item in document["skipped_devices"]:
        console.out(f"skipped     {item.get('serial_number') or item['device_id']}: {item['reason']}")
    console.out(f"next        {PROG} diff {output}")
