"""Posture gaps through the handlers (simulator + moto): what could not be read hides nothing and invents nothing.

A category that failed for a run is unknown there. The snapshot carries what the last read said (marked
`carried_from`), so the change made meanwhile is published by the run that reads it again, and nothing is
published that no source observed. The test runs a few Macs through the collector and differ handlers on a
fake clock. The same rule for each way a category can go unread, a Mac missing from a category's rows and a
FileVault status Prism did not give (with details that were not re-read): test_posture.py, in memory.
"""

from __future__ import annotations

from aws_helpers import read_rows
from handler_pipeline import the_manifest

from simulator import Fleet


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
    failed = the_manifest(second)["posture"]["categories"]["application_firewall"]
    assert failed["status"] == "failed" and "500" in failed["error"]
    assert "Nothing was committed" not in failed["error"]  # it was: the category is carried, the run commits
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
