"""The saved queries over tenant snapshot tables answer from the latest committed snapshot that READ the source.

A read that found nothing (every threat resolved, no CVE left) is the latest read: the answer is empty, never
the older read's rows. A run whose token may not read the source leaves the last read standing, empty or not
(unknown is not false). Snapshots are built by the collector on in-memory fakes into a folder, and the queries
run there with DuckDB, as Athena's text translated (query/local_duckdb.py).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from tenant_fakes import SOURCES, Tenant, critical_cve, threat

from kandji_snapshots.snapshots.layout import committed_key


def test_a_read_that_finds_nothing_empties_the_answer_and_a_forbidden_read_changes_nothing(tmp_path: Path):
    tenant = Tenant(tmp_path)
    api = tenant.api
    detection, vulnerability = critical_cve("d1", "CVE-2024-9999")
    api.rows = {"threats": [threat("d1", "Pirrit", "RELEASED"), threat("d2", "Adload", "QUARANTINED")],
                "detections": [detection], "vulnerabilities": [vulnerability]}
    tenant.collect()
    assert tenant.answers() == ([("Pirrit", "d1")], [("CVE-2024-9999", "d1")])

    # Every threat resolved, the CVE patched: read, and empty. The answer is empty, not the last rows.
    api.rows = {"threats": [], "detections": [], "vulnerabilities": []}
    emptied = tenant.collect()
    assert emptied.document["tenant"]["tables"]["threats"]["rows"] == 0
    assert len(emptied.tenant_table_keys("threats")) == 1, "an empty read is a read: one empty part"
    assert tenant.committed_row(emptied)["tenant_sources_read"] == sorted(SOURCES)
    assert tenant.answers() == ([], [])

    # A token that may no longer read them: unknown, so the last read (empty) stands.
    api.forbidden = {"threats", "detections", "vulnerabilities"}
    refused = tenant.collect()
    assert {name: read["status"] for name, read in refused.document["tenant"]["sources"].items()} == \
        dict.fromkeys(SOURCES, "forbidden")
    assert tenant.committed_row(refused)["tenant_sources_read"] == []
    assert tenant.answers() == ([], [])

    # Read again, with rows; then refused again: those rows stand.
    api.forbidden = set()
    detection, vulnerability = critical_cve("d2", "CVE-2024-5555")
    api.rows = {"threats": [threat("d2", "Adload", "ALLOWED")], "detections": [detection],
                "vulnerabilities": [vulnerability]}
    tenant.collect()
    assert tenant.answers() == ([("Adload", "d2")], [("CVE-2024-5555", "d2")])
    api.forbidden = {"threats", "detections"}
    api.rows = {"threats": [], "detections": [], "vulnerabilities": []}  # never served: the token may not ask
    tenant.collect()
    assert tenant.answers() == ([("Adload", "d2")], [("CVE-2024-5555", "d2")])


def test_rows_written_before_the_column_keep_the_rule_of_their_time(tmp_path: Path):
    """A committed_snapshots row without tenant_sources_read (an older version wrote it) read a source when its
    snapshot has rows in the table: the answer is those rows, not empty, until a snapshot of this version
    reads the source."""
    tenant = Tenant(tmp_path)
    api = tenant.api
    api.rows["threats"] = [threat("d1", "Pirrit", "RELEASED")]
    old = tenant.collect()
    old_row = {name: value for name, value in tenant.committed_row(old).items() if name != "tenant_sources_read"}
    tenant.store.put(committed_key(old.snapshot_id), gzip.compress(json.dumps(old_row).encode() + b"\n"))
    assert tenant.answers()[0] == [("Pirrit", "d1")]

    api.forbidden = {"threats"}
    tenant.collect()
    assert tenant.answers()[0] == [("Pirrit", "d1")], "not read since: the old row's read stands"

    api.forbidden = set()
    api.rows["threats"] = []
    tenant.collect()
    assert tenant.answers()[0] == []
