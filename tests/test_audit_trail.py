"""The audit trail through the collector handler (simulator over HTTP, moto): every event stored exactly once
across runs, whatever arrives between and during them, late events, a source that fails mid-read and a run
that fails after reading it."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from aws_helpers import all_keys, manifests, read_rows
from kandji_fakes import RunClock, run_handler_on

from simulator import Fleet

EVENT = json.loads((Path(__file__).parent.parent / "events" / "scheduler_event.json").read_text())


def stored_events() -> Counter:
    """How often each event id is in the committed audit_events table."""
    keys = [key for manifest in manifests()
            for key in ((manifest.get("tenant") or {}).get("tables") or {}).get("audit_events", {}).get("keys", [])]
    return Counter(row["id"] for row in read_rows(keys))


def test_every_audit_event_is_stored_exactly_once_across_runs(pipeline, lambda_context):
    fleet = Fleet.generate(6, seed=3)
    sim = pipeline(fleet).sim  # this test runs the collector on its own clock
    runs = RunClock()
    tenant = sim.tenant
    tenant.clock = lambda: runs.current.now()
    tenant.audit_page_rows = 2  # several pages a run
    expected: set[str] = set()

    def add(**options) -> str:
        event = tenant.add_audit_event(**options)
        expected.add(event["id"])
        return event["id"]

    first = runs.next_run()
    tenant.add_audit_event(occurred_at=first.now() - timedelta(days=40))  # before the backfill window: not read
    for hours in (5, 4, 3, 2, 1):
        add(occurred_at=first.now() - timedelta(hours=hours))
    # During the read: a new event, and a late one behind the reader (earlier than events already read).
    tenant.before_page("audit_events", 2,
                       lambda: (add(), add(occurred_at=first.now() - timedelta(hours=4, minutes=30))))
    run_handler_on(first, EVENT, lambda_context)
    once = stored_events()
    assert set(once) <= expected and max(once.values()) == 1

    second = runs.next_run()  # the audit source fails mid-read: this run stores none of its events
    add(occurred_at=second.now() - timedelta(hours=3))  # late: before the first run's watermark
    add()
    stored_before = stored_events()
    sim.faults.fail(r"cursor=", status=400, times=1, body={"detail": "bad cursor"})  # the second page
    run_handler_on(second, EVENT, lambda_context)
    latest = max(manifests(), key=lambda manifest: manifest["snapshot_id"])
    assert latest["tenant"]["sources"]["audit_events"]["status"] == "failed"
    assert stored_events() == stored_before

    third = runs.next_run()  # the run fails after reading the trail: nothing of it is stored
    add()
    sim.faults.fail(r"/details", status=400, times=None)
    with pytest.raises(Exception):
        run_handler_on(third, EVENT, lambda_context)
    sim.faults.clear()
    assert stored_events() == stored_before

    fourth = runs.next_run()
    add(occurred_at=fourth.now() - timedelta(hours=2))
    run_handler_on(fourth, EVENT, lambda_context)
    stored = stored_events()
    assert set(stored) == expected
    assert set(stored.values()) == {1}
    committed = {key for manifest in manifests()
                 for key in manifest["tenant"]["tables"].get("audit_events", {}).get("keys", [])}
    assert set(all_keys(prefix="snapshots/audit_events/")) == committed  # nothing left of the failed runs
    # Partitioned by the day each event occurred.
    for key in committed:
        day = key.split("dt=")[1][:10]
        assert {row["occurred_at"][:10] for row in read_rows([key])} == {day}
