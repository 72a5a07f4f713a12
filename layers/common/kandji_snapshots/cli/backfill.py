"""`backfill-committed`: write the committed-snapshots rows of snapshots taken before that table existed.

Athena's views and saved queries read a snapshot only through its row in `committed_snapshots`
(snapshots/committed.py). New runs write it; after an upgrade, this command writes it once for every
snapshot committed before (those with a manifest and no row). Safe to run again: it writes nothing twice.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from kandji_snapshots.cli.console import Console
from kandji_snapshots.cli.diff import open_source
from kandji_snapshots.snapshots.committed import backfill


def run_backfill(args: argparse.Namespace, console: Console, environ: Mapping[str, str]) -> int:
    store = open_source(args.source)
    written = backfill(store, progress=lambda snapshot_id: console.out(f"recorded {snapshot_id}"))
    console.out(f"{len(written)} committed snapshot{'s' if len(written) != 1 else ''} recorded in {store.location} "
                "(the others already were)")
    return 0
