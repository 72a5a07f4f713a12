"""Prism tables are live: rows removed or inserted before the offset while a client pages one.

Every test goes through the simulator over HTTP: `faults.change_during_prism_read` changes the
fleet between two page requests, as devices unenrol and apps come and go on a real tenant. The
client's pages overlap and it resynchronises on the rows already read, so no row is skipped or
read twice; a shift it cannot match fails the read, and nothing half read is committed.
"""

from __future__ import annotations

import pytest
from aws_helpers import all_keys, manifests
from handler_pipeline import collect_and_diff, start
from kandji_fakes import simulator_client

from kandji_snapshots.collect.posture import FAILED, READ, PostureReader
from kandji_snapshots.errors import KandjiApiError
from kandji_snapshots.kandji.paging import PrismPaginator
from simulator import Fleet, KandjiSimulator

TOKEN = "kst-prism-shift-5e6f7a"


def app_keys(rows: list[dict]) -> list[tuple]:
    return [(row["device_id"], row["name"], row["bundle_id"], row["path"]) for row in rows]


def remove_first_app(fleet: Fleet, device_id: str) -> None:
    app = next(a for a in fleet.apps(device_id) if a.get("bundle_id"))
    fleet.remove_app(device_id, app["bundle_id"], path=app["path"])


# Each change lands on the first device in Prism's order, whose rows the client has read by then.
APP_TABLE_CHANGES = {
    "one app removed": remove_first_app,
    "one app installed": lambda fleet, device_id: fleet.install_app(device_id, "Shift", "com.example.shift", "1.0"),
    "the device unenrolled": lambda fleet, device_id: fleet.remove(device_id),
    "a device enrolled before it": lambda fleet, device_id: fleet.enroll("Mac", position=0),
}


@pytest.mark.parametrize("change", APP_TABLE_CHANGES)
def test_an_app_table_shifting_before_the_offset_loses_and_repeats_no_row(change):
    fleet = Fleet.generate(40, seed=11, apps_per_device=(5, 12))
    first = fleet.device_ids(ordering=None)[0]
    with KandjiSimulator(fleet, token=TOKEN, prism_page_rows=25) as sim:
        before = list(fleet.prism_app_rows())
        sim.faults.change_during_prism_read(lambda: APP_TABLE_CHANGES[change](fleet, first), before_page=4)
        rows = list(simulator_client(sim, TOKEN).prism_apps())
        assert sim.faults.pending("prism_change") == 0  # the table did shift mid-read
        after = list(fleet.prism_app_rows())
        requests = sim.stats.by_endpoint["prism_apps"]
    assert app_keys(after) != app_keys(before)
    # Every row exactly once, as it was when read: the change happened behind the reader.
    assert rows == before
    assert requests <= PrismPaginator.requests_for(len(before), 25) + 2  # at most a page asked further back


POSTURE_CHANGES = {
    "one device unenrolled": lambda fleet, ids: fleet.remove(ids[0]),
    "four devices unenrolled": lambda fleet, ids: [fleet.remove(device_id) for device_id in ids[:4]],
    "a device enrolled first": lambda fleet, ids: fleet.enroll("Mac", position=0),
}


@pytest.mark.parametrize("change", POSTURE_CHANGES)
def test_a_posture_category_shifting_before_the_offset_loses_and_repeats_no_device(change):
    fleet = Fleet.generate(40, seed=12)
    ids = fleet.device_ids(ordering=None)
    with KandjiSimulator(fleet, token=TOKEN, prism_page_rows=5) as sim:
        before = [row["device_id"] for row in sim.prism.rows("device_information")]
        sim.faults.change_during_prism_read(lambda: POSTURE_CHANGES[change](fleet, ids), before_page=3,
                                            path_regex="/device_information")
        rows = [row["device_id"] for row in simulator_client(sim, TOKEN).iter_prism_category("device_information")]
        assert sim.faults.pending("prism_change") == 0
        assert [row["device_id"] for row in sim.prism.rows("device_information")] != before
    assert rows == before  # the devices read before the change, then every later one, each once


def test_a_shift_too_large_to_match_fails_the_read_and_drops_the_category():
    fleet = Fleet.generate(40, seed=13)
    ids = fleet.device_ids(ordering=None)
    with KandjiSimulator(fleet, token=TOKEN, prism_page_rows=5) as sim:
        # Two pages read (8 devices), then the first 12 devices unenrol: no row read is left to match.
        sim.faults.change_during_prism_read(lambda: [fleet.remove(d) for d in ids[:12]], before_page=3)
        with pytest.raises(KandjiApiError, match="GET /api/v1/prism/device_information changed too much while it "
                                                 "was read: after 8 rows") as failure:
            list(simulator_client(sim, TOKEN).iter_prism_category("device_information"))
        assert "next run reads it again" in str(failure.value) and TOKEN not in str(failure.value)
        assert sim.stats.by_endpoint["prism_device_information"] <= 3 + 4  # bounded: never the whole table again

        sim.faults.change_during_prism_read(lambda: [fleet.remove(d) for d in ids[12:24]], before_page=3)
        index = PostureReader(simulator_client(sim, TOKEN), categories=("device_information", "filevault")).read(
            ids[24:], "2026-11-29T10:00:00Z")
    assert index.categories["device_information"].status == FAILED  # dropped whole, not kept half read
    assert "changed too much" in index.categories["device_information"].error
    assert index.categories["filevault"].status == READ


def test_a_prism_apps_read_that_cannot_be_matched_commits_no_snapshot(deployment, lambda_context, monkeypatch):
    fleet = Fleet.generate(30, seed=14, apps_per_device=(3, 6))
    sim = start(fleet, monkeypatch, prism_page_rows=10)
    monkeypatch.setenv("KANDJI_APPS_SOURCE", "prism")
    try:
        ids = fleet.device_ids(ordering=None)
        sim.faults.change_during_prism_read(lambda: [fleet.remove(d) for d in ids[:15]], before_page=3,
                                            path_regex="/prism/apps")
        with pytest.raises(KandjiApiError, match="GET /api/v1/prism/apps changed too much while it was read"):
            collect_and_diff(lambda_context)
    finally:
        sim.stop()
    assert all_keys(prefix="snapshots/") == [] and manifests() == []


def test_a_device_unenrolled_mid_read_reports_no_app_removed_on_another_device(deployment, lambda_context,
                                                                               monkeypatch):
    fleet = Fleet.generate(60, seed=15, apps_per_device=(5, 12))
    sim = start(fleet, monkeypatch, prism_page_rows=25)  # as recorded: short, null-cursor pages
    monkeypatch.setenv("KANDJI_APPS_SOURCE", "prism")
    try:
        collect_and_diff(lambda_context)
        deployment("all")
        gone = fleet.device_ids(ordering=None)[0]  # first in Prism's order: its rows are read on page 1
        sim.faults.change_during_prism_read(lambda: fleet.remove(gone), before_page=4, path_regex="/prism/apps")
        collect_and_diff(lambda_context)
        assert sim.faults.pending("prism_change") == 0
        events = [e for e in deployment("all") if e["change_type"] != "snapshot_summary"]
    finally:
        sim.stop()
    # The device went after the device list was read: at most it is reported removed, nothing else.
    assert {(e["change_type"], e["device_id"]) for e in events} <= {("device_removed", gone)}
    assert not [e for e in events if e["change_type"].startswith("app_")]


def test_of_two_rows_alike_the_unread_one_is_not_taken_for_the_one_read():
    # The same app twice on a device (same name, bundle id and path), one on each side of the first page's end.
    fleet = Fleet.generate(1, seed=16)

    def row(name):
        return {"device_id": "d1", "name": name, "bundle_id": f"com.example.{name}", "path": None}

    table = [row("a"), row("b"), row("twice"), row("twice"), row("c")]
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        for offset in (0, 2, 4):  # pages of 3 rows overlapping by 1: offsets 0 then 2, then 4 proves the end
            sim.faults.fail(rf"/prism/apps\?.*offset={offset}$", status=200, times=None, body={
                "offset": None, "limit": 3, "total": len(table), "data": table[offset:offset + 3], "cursor": None})
        rows = list(simulator_client(sim, TOKEN).prism_apps())
    assert rows == table
