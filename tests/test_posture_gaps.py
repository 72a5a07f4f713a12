"""Posture gaps through the handlers (simulator + moto): what could not be read hides nothing and invents nothing.

A category that failed for a run, a Mac missing from a category's rows, a FileVault status Prism did not
give: each is unknown there. The snapshot carries what the last read said (marked `carried_from`), so the
change made meanwhile is published by the run that reads it again, and nothing is published that no source
observed. Each test runs a few Macs through the collector and differ handlers on a fake clock.
"""

from __future__ import annotations

from aws_helpers import read_rows
from handler_pipeline import the_manifest

from simulator import Fleet

FILEVAULT_FIELDS = ("posture.filevault.status", "filevault.filevault_enabled")


def small_fleet(seed: int) -> Fleet:
    return Fleet.generate(3, seed=seed, platforms={"Mac": 1.0}, apps_per_device=(1, 2))


def device_changes(messages: list[dict]) -> list[dict]:
    return [message for message in messages if message["change_type"] == "device_changed"]


def high_reasons(message: dict) -> set[str]:
    return {change["reason"] for change in message["changes"] if change["severity"] == "high"}


def posture_row(result: dict, device_id: str) -> dict:
    rows = read_rows(the_manifest(result)["tables"]["device_posture"]["keys"])
    return next(row for row in rows if row["device_id"] == device_id)


def test_a_firewall_turned_off_while_its_category_failed_is_published_when_it_is_read_again(pipeline):
    run = pipeline(small_fleet(41))
    mac = next(row["device_id"] for row in run.sim.prism.rows("application_firewall") if row["status"])
    first = run.collect()
    run.diff(first["snapshot_id"])
    run.sim.faults.fail(r"/prism/application_firewall", status=500, times=None)  # the whole run
    run.sim.prism.set(mac, "application_firewall", status=False)
    second = run.collect()
    assert the_manifest(second)["posture"]["categories"]["application_firewall"]["status"] == "failed"
    carried = posture_row(second, mac)
    assert carried["application_firewall"]["status"] is True  # what the last read said, marked as such
    assert carried["carried_from"]["application_firewall"] == the_manifest(first)["finished_at"]
    run.diff(second["snapshot_id"])
    run.sim.faults.clear()
    third = run.collect()["snapshot_id"]
    run.diff(third)
    fourth = run.collect()["snapshot_id"]
    run.diff(fourth)

    changed = device_changes(run.published_once())
    assert [(message["device_id"], message["snapshot_id"], high_reasons(message)) for message in changed] == [
        (mac, third, {"firewall turned off"})]


def test_a_mac_missing_from_a_category_is_unknown_there_and_stopping_to_report_is_found_when_its_row_is_back(
        pipeline):
    run = pipeline(small_fleet(42))
    mac = run.fleet.device_ids()[1]
    run.diff(run.collect()["snapshot_id"])
    run.sim.prism.leave_out(mac, "gatekeeper_and_xprotect")  # Prism has no row for it this run
    second = run.collect()
    assert posture_row(second, mac)["gatekeeper_and_xprotect"]["xprotect_version"]  # carried
    run.diff(second["snapshot_id"])
    run.sim.prism.leave_out(mac, "gatekeeper_and_xprotect", left_out=False)
    run.sim.prism.set(mac, "gatekeeper_and_xprotect", xprotect_version=None)  # the row is back, without it
    third = run.collect()["snapshot_id"]
    run.diff(third)

    changed = device_changes(run.published_once())
    assert [(message["device_id"], message["snapshot_id"], high_reasons(message)) for message in changed] == [
        (mac, third, {"XProtect disabled"})]


def test_filevault_on_is_never_reported_off_from_stale_details_when_prism_fails_or_gives_no_status(pipeline):
    run = pipeline(small_fleet(43))
    mac = run.fleet.device_ids()[0]
    run.fleet.set_filevault(mac, False)
    run.diff(run.collect()["snapshot_id"])  # 1: off, in Prism and in the details
    run.fleet.set_filevault(mac, True)
    run.sim.faults.unenroll_during_run(mac)  # its details are not re-read: they still say off
    second = run.collect()["snapshot_id"]
    run.diff(second)  # 2: Prism sees it on
    run.sim.faults.fail(r"/prism/filevault", status=500, times=None)
    run.diff(run.collect()["snapshot_id"])  # 3: Prism fails, the details still say off
    run.sim.faults.clear()
    run.sim.faults.unenroll_during_run(mac)
    run.sim.prism.set(mac, "filevault", status=None)
    run.diff(run.collect()["snapshot_id"])  # 4: Prism's row has no status, the details still say off
    run.sim.faults.clear()
    run.sim.prism.set(mac, "filevault", status=True)
    run.diff(run.collect()["snapshot_id"])  # 5: both read again, both on: the details only catch up

    changed = device_changes(run.published_once())
    filevault = [(message["snapshot_id"], change["field"], change["before"], change["after"], change["severity"])
                 for message in changed for change in message["changes"] if change["field"] in FILEVAULT_FIELDS]
    assert filevault == [(second, "posture.filevault.status", False, True, "info")]
    assert not any(high_reasons(message) for message in changed)
