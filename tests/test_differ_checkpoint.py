"""A comparison the deadline cuts short, on the in-memory store and publisher: saved at a device boundary,
resumed by the next attempt, every event published once in device order. The differ handler's retry
through moto: test_differ_handler.py."""

from __future__ import annotations

import gzip
import json

from differ_fixtures import SECOND, FakeFleet, Run

from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.errors import DeadlineExceeded
from kandji_snapshots.snapshots.layout import changes_key


def stepping_time_left(seconds: float):
    """The Lambda's remaining time, one second less each time it is read."""
    remaining = [seconds]

    def time_left() -> float:
        remaining[0] -= 1
        return remaining[0]
    return time_left


def mass_update(fleet: FakeFleet) -> None:
    for item in fleet.devices.values():
        item["agent_version"] = "4.6.0"  # one device_changed per device


def test_a_comparison_cut_short_by_the_deadline_goes_on_where_it_stopped_attempt_after_attempt():
    """Each attempt has ~4 deadline checks before the 30 s margin: about 64 of 200 devices."""
    run = Run(mass_update, fleet=FakeFleet.of(200), max_events_per_run=1000)
    attempts, checkpoints = 0, []
    while True:
        attempts += 1
        assert attempts <= 10, "no progress from one attempt to the next"
        try:
            result = SnapshotDiffer(run.store, run.publisher, settings=run.settings).run(
                SECOND, time_left=stepping_time_left(34))
            break
        except DeadlineExceeded as stopped:
            if "stopped comparing" not in str(stopped):  # the comparison is done; publishing stopped in time
                continue
            assert "Nothing was published yet" in str(stopped) and "goes on from there" in str(stopped)
            checkpoint = json.loads(run.store.get(f"changes/_published/{SECOND}/comparison.json"))
            checkpoints.append((checkpoint["after_device"], checkpoint["events"]))
            assert list(run.store.list_keys(changes_key(SECOND))) == []  # no changes file until the comparison ends
            assert run.publisher.messages == []
    assert len(checkpoints) >= 2 and checkpoints == sorted(checkpoints)
    assert len({after for after, _ in checkpoints}) == len(checkpoints)  # every attempt got further
    assert result.event_count == 200 and not result.suppressed
    events = run.publisher.events
    assert sorted(event.get("device_id", "~") for event in events) == [f"id-{n:03d}" for n in range(200)] + ["~"]
    assert len({event["event_id"] for event in events}) == 201
    # The changes file holds the events in device order, as an uninterrupted run writes them.
    changes = [json.loads(line) for line in gzip.decompress(run.store.get(changes_key(SECOND))).splitlines()]
    assert [event["device_id"] for event in changes] == [f"id-{n:03d}" for n in range(200)]
    assert [key for key in run.store.list_keys(f"changes/_published/{SECOND}/") if "comparison" in key] == []
