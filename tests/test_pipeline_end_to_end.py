"""The whole pipeline as deployed, on this machine: the collector and differ handlers, the
Kandji simulator over HTTP, and moto's S3, Secrets Manager, SNS and SQS. A fleet changes between
two collections; subscribers (one filtered to high severity) must receive exactly those changes,
once each, with the right severity. One small fleet per flow: the same rules on larger fleets of
every platform, collected and diffed in memory, are test_fleet_rules.py's; the device list paged
over HTTP is test_collector_integration.py's."""

from __future__ import annotations

import json

from aws_helpers import create_secret, manifests, read_rows
from conftest import load_handler
from demo_changes import assert_exactly_the_demo_changes
from handler_pipeline import TOKEN, collect_and_diff, start
from real_shapes import assert_prism_rows_are_the_served_ones, assert_typed, real_shapes_fleet

from simulator import Fleet, KandjiSimulator


def test_subscribers_receive_exactly_the_fleet_changes(deployment, lambda_context, monkeypatch):
    fleet = Fleet.generate(60, seed=21)
    sim = start(fleet, monkeypatch)
    try:
        collect_and_diff(lambda_context)
        first = deployment("all")
        assert [m["change_type"] for m in first] == ["snapshot_summary"]  # first snapshot: summary only
        assert first[0]["first_snapshot"] is True and first[0]["device_count"] == 60

        made = fleet.apply_demo_changes()
        trigger = collect_and_diff(lambda_context)
        events = deployment("all")
        high = deployment("high")
        load_handler("differ").lambda_handler(trigger, lambda_context)  # EventBridge delivers it again
        redelivered = deployment("all")
    finally:
        sim.stop()

    assert_exactly_the_demo_changes(events, made, fleet)
    # The filtered subscriber got the two high events and the (high) summary, nothing else.
    assert sorted(e["change_type"] for e in high) == ["device_changed", "device_removed", "snapshot_summary"]
    assert redelivered == []


# --- the real response shapes (../shared/kandji-api.md, "Real responses") ----------------------------

def snapshot_rows(snapshot_id: str, table: str) -> list[dict]:
    [manifest] = [m for m in manifests() if m["snapshot_id"] == snapshot_id]
    return read_rows(manifest["tables"][table]["keys"])


def test_real_shapes_arrive_typed_and_a_check_in_only_rerun_publishes_nothing(deployment, lambda_context,
                                                                             monkeypatch):
    fleet = real_shapes_fleet(60, seed=31)
    sim = KandjiSimulator(fleet, token=TOKEN, prism_page_rows=25).start()  # Prism: short, null-cursor pages
    monkeypatch.setenv("KANDJI_SECRET_ID", create_secret(json.dumps({"api_url": sim.api_url, "api_token": TOKEN})))
    try:
        first = collect_and_diff(lambda_context)["detail"]["object"]["key"].split("/")[3]
        deployment("all")
        fleet.check_in_all()  # everything that moves, moves: check-ins, disk use, lost devices, app inventory
        monkeypatch.setenv("KANDJI_APPS_SOURCE", "prism")  # and the second run reads apps from Prism
        second = collect_and_diff(lambda_context)["detail"]["object"]["key"].split("/")[3]
        messages = deployment("all")
    finally:
        sim.stop()
    assert [m["change_type"] for m in messages] == ["snapshot_summary"] and messages[0]["event_count"] == 0
    assert messages[0]["first_snapshot"] is False
    assert_typed(fleet, snapshot_rows(first, "devices"), snapshot_rows(first, "device_details"),
                 snapshot_rows(first, "device_apps"))
    assert_prism_rows_are_the_served_ones(fleet, snapshot_rows(second, "device_apps"))
