"""Whole-fleet posture from Prism: paging, the device_posture table, optional categories, the rules.

Unit tests run the collector and the differ over an in-memory fleet; the rest go through the
simulator over HTTP and, for the handler tests, the collector and differ handlers on moto.
"""

from __future__ import annotations

import json

import pytest
from aws_helpers import read_rows
from differ_fixtures import FakeFleet, diff
from handler_pipeline import collect_and_diff, start
from kandji_fakes import simulator_client

from kandji_snapshots.collect.posture import FAILED, POSTURE_CATEGORIES, PostureReader
from kandji_snapshots.collect.refresh import BudgetExhausted
from kandji_snapshots.diff.differ import SnapshotDiffer
from kandji_snapshots.diff.posture_changes import FileVaultSource, filevault_fact, reconcile_filevault
from kandji_snapshots.diff.publisher import MemoryPublisher
from kandji_snapshots.diff.rules import FILEVAULT_FIELDS
from kandji_snapshots.errors import KandjiApiError, KandjiAuthError
from kandji_snapshots.kandji.paging import PrismPaginator
from kandji_snapshots.kandji.permissions import prism_permission
from kandji_snapshots.snapshots.catalog import write_manifest
from kandji_snapshots.snapshots.schema import POSTURE_CATEGORY_COLUMNS
from kandji_snapshots.snapshots.storage import MemoryObjectStore
from kandji_snapshots.snapshots.table_io import iter_rows
from simulator import Fleet, KandjiSimulator

TOKEN = "sim-token"


def category_requests(sim: KandjiSimulator, category: str) -> list[str]:
    return [query for _, _, path, query, _ in sim.stats.snapshot()["request_log"] if path.endswith(f"/{category}")]


# --- paging ---------------------------------------------------------------------------------

def test_a_category_is_read_whole_through_short_pages_and_null_cursors():
    fleet = Fleet.generate(60, seed=5)
    # Pages shorter than the limit asked for, and `cursor: null` on every page.
    with KandjiSimulator(fleet, token=TOKEN, prism_page_rows=7) as sim:
        rows = list(simulator_client(sim, TOKEN).iter_prism_category("application_firewall"))
        expected = [row["device_id"] for row in sim.prism.rows("application_firewall")]
        assert [row["device_id"] for row in rows] == expected and len(expected) > 7
        assert len(category_requests(sim, "application_firewall")) == PrismPaginator.requests_for(len(expected), 7)


def test_cursors_are_followed_when_prism_gives_them():
    fleet = Fleet.generate(40, seed=6)
    with KandjiSimulator(fleet, token=TOKEN, prism_page_rows=5, prism_cursors=True) as sim:
        rows = list(simulator_client(sim, TOKEN).iter_prism_category("device_information"))
        assert len(rows) == len(fleet) == len({row["device_id"] for row in rows})
        queries = category_requests(sim, "device_information")
        assert "cursor=" not in queries[0] and all("cursor=" in query for query in queries[1:-1])
        assert "cursor=" not in queries[-1]  # the last cursor is null: a page by offset proves the end


def test_a_server_that_repeats_a_page_is_not_followed_in_circles():
    fleet = Fleet.generate(40, seed=7)
    with KandjiSimulator(fleet, token=TOKEN, prism_page_rows=5) as sim:
        sim.faults.repeat_prism_page()
        with pytest.raises(KandjiApiError, match="served a page it had served before"):
            list(simulator_client(sim, TOKEN).iter_prism_category("device_information"))
        assert len(category_requests(sim, "device_information")) <= 5


def test_a_category_that_runs_out_of_rows_before_its_total_is_dropped_whole():
    fleet = Fleet.generate(40, seed=7)
    with KandjiSimulator(fleet, token=TOKEN, prism_page_rows=5) as sim:
        total = len(sim.prism.rows("device_information"))
        # Pages of 5 overlapping by 2: offsets 0, 3, 6 (after 8 rows read).
        empty = {"offset": 6, "limit": 5, "total": total, "data": [], "cursor": None}  # once: the next one is whole
        sim.faults.fail(r"/device_information\?.*offset=6$", status=200, body=empty)
        with pytest.raises(KandjiApiError, match=f"ran out of rows after 8 of the {total} it announced"):
            list(simulator_client(sim, TOKEN).iter_prism_category("device_information"))
        sim.faults.fail(r"/device_information\?.*offset=6$", status=200, body=empty)
        index = PostureReader(simulator_client(sim, TOKEN), categories=("device_information", "filevault")).read(
            fleet.device_ids(), "2026-11-23T10:00:00Z")
        assert index.categories["device_information"].status == FAILED  # not 10 devices' posture as unknown
        assert index.read_categories == ["filevault"]
        assert all(index.take(device_id)[0]["device_information"] is None for device_id in fleet.device_ids())


def test_an_unknown_category_answers_400_and_a_missing_permission_403():
    fleet = Fleet.generate(5, seed=8)
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        client = simulator_client(sim, TOKEN)
        with pytest.raises(KandjiApiError, match="Invalid category: firewalls") as bad:
            list(client.iter_prism_category("firewalls"))
        assert bad.value.status == 400
        sim.permissions.discard("prism_startup_settings")
        with pytest.raises(KandjiAuthError, match=r"GET /prism/startup_settings \(Prism: startup settings\)"):
            list(client.iter_prism_category("startup_settings"))


def test_the_simulator_serves_each_category_with_its_real_row_shape():
    import requests

    fleet = Fleet.generate(20, seed=9)
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        body = requests.get(sim.api_url + "prism/startup_settings", params={"limit": 3},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
        assert set(body) == {"offset", "limit", "total", "data", "cursor"}
        assert body["offset"] is None and body["cursor"] is None and body["total"] > len(body["data"]) == 3
        row = body["data"][0]
        assert {"device_id", "device__name", "device__family", "serial_number", "blueprint_name", "sip", "ssv",
                "secure_boot_level", "external_boot_level", "last_collected_at"} <= set(row)
        assert isinstance(row["sip"], bool) and row["last_collected_at"].endswith("+00:00")
        mac = row["device_id"]
        filevault = {r["device_id"]: r for r in sim.prism.rows("filevault")}[mac]
        assert filevault["status"] is fleet.details(mac)["filevault"]["filevault_enabled"]  # derived from details
        fleet.set_filevault(mac, not filevault["status"])
        assert {r["device_id"]: r for r in sim.prism.rows("filevault")}[mac]["status"] is not filevault["status"]
        sim.prism.set(mac, "startup_settings", secure_boot_level="permissive")
        assert {r["device_id"]: r for r in sim.prism.rows("startup_settings")}[mac]["secure_boot_level"] == \
            "permissive"
        platforms = {r["device__family"] for r in sim.prism.rows("application_firewall")}
        assert platforms == {"Mac"} and len(sim.prism.rows("device_information")) == len(fleet)


# --- the table and the manifest (collector over an in-memory fleet) --------------------------

def mac_posture(firewall: bool = True, sip: bool = True, boot: str = "full", filevault: bool = True,
                gatekeeper: bool = True, xprotect: str | None = "5283", device_lock: bool = False,
                collected: str = "2026-11-23T09:00:00+00:00") -> dict[str, dict]:
    return {
        "device_information": {"device__family": "Mac", "model_name": "MacBook Air", "apple_silicon": True,
                               "device_capacity": 245.11, "last_collected_at": collected},
        "filevault": {"status": filevault, "key_type": "Personal Recovery Key", "key_escrowed": True,
                      "last_collected_at": collected},
        "application_firewall": {"status": firewall, "stealth_mode": True, "logging_option": "throttled",
                                 "last_collected_at": collected},
        "gatekeeper_and_xprotect": {"gatekeeper_status": gatekeeper, "xprotect_version": xprotect,
                                    "last_collected_at": collected},
        "startup_settings": {"sip": sip, "ssv": True, "secure_boot_level": boot, "last_collected_at": collected},
        "activation_lock": {"device_activation_lock_enabled": device_lock, "user_activation_lock_enabled": False,
                            "last_collected_at": collected},
    }


def posture_fleet(count: int = 3, **overrides) -> FakeFleet:
    fleet = FakeFleet.of(count)
    for device_id in fleet.devices:
        set_posture(fleet, device_id, **overrides)
    return fleet


def set_posture(fleet: FakeFleet, device_id: str, **values) -> None:
    for category, columns in mac_posture(**values).items():
        fleet.posture.setdefault(category, {})[device_id] = columns


def posture_rows(store, manifest) -> list[dict]:
    return list(iter_rows(store, manifest.table_keys("device_posture")))


def test_every_device_has_a_typed_posture_row_and_the_manifest_counts_each_category():
    fleet = posture_fleet(3)
    fleet.posture["application_firewall"]["id-001"]["status"] = "False"  # string booleans are typed too
    fleet.posture["filevault"]["id-000"]["unheard_of"] = "x"  # an unknown column is kept, in extra
    fleet.posture["filevault"]["ghost"] = {"status": True}  # a device not in the list: not kept
    store = MemoryObjectStore()
    manifest = fleet.collect(store, hour=10)
    rows = posture_rows(store, manifest)
    assert [row["device_id"] for row in rows] == ["id-000", "id-001", "id-002"]
    first = rows[0]
    assert first["application_firewall"]["status"] is True and first["startup_settings"]["sip"] is True
    assert first["device_information"] == {**first["device_information"], "device_family": "Mac",
                                           "device_capacity": 245.11, "apple_silicon": True}
    assert first["filevault"]["last_collected_at"] == "2026-11-23T09:00:00.000000Z"
    assert json.loads(first["extra"]) == {"filevault.unheard_of": "x"}
    assert "serial_number" not in json.dumps(first) and rows[1]["application_firewall"]["status"] is False
    summary = manifest.document["posture"]
    assert summary["missing_permissions"] == []
    assert summary["categories"]["filevault"] == {"status": "read", "rows": 4, "requests": 0, "devices": 3}


def test_a_category_the_token_may_not_read_is_skipped_named_and_never_fails_the_run(caplog):
    fleet = posture_fleet(3)
    del fleet.posture["startup_settings"]  # the fake answers 403 for it
    store = MemoryObjectStore()
    manifest = fleet.collect(store, hour=10)
    rows = posture_rows(store, manifest)
    assert len(rows) == 3 and all(row["startup_settings"] is None for row in rows)
    assert all(row["application_firewall"]["status"] is True for row in rows)
    summary = manifest.document["posture"]
    assert summary["missing_permissions"] == [prism_permission("startup_settings")]
    assert summary["categories"]["startup_settings"]["status"] == "forbidden"
    assert any("posture category skipped" in r.message and getattr(r, "category", "") == "startup_settings"
               for r in caplog.records)


# --- rules (collector and differ over an in-memory fleet) ------------------------------------

def high_reasons(events: list[dict]) -> dict[str, set[str]]:
    return {event["device_id"]: {change["reason"] for change in event["changes"] if change["severity"] == "high"}
            for event in events}


@pytest.mark.parametrize("change, reason", [
    ({"firewall": False}, "firewall turned off"),
    ({"gatekeeper": False}, "Gatekeeper disabled"),
    ({"xprotect": None}, "XProtect disabled"),
    ({"sip": False}, "SIP disabled"),
    ({"boot": "reduced"}, "secure boot lowered"),
    ({"device_lock": True}, "activation lock changed"),
    ({"filevault": False}, "FileVault turned off"),
])
def test_a_posture_change_is_one_high_event_with_its_reason(change, reason):
    events = diff(lambda fleet: set_posture(fleet, "id-001", **change), fleet=posture_fleet(3)).events
    assert high_reasons(events) == {"id-001": {reason}}
    assert events[0]["severity"] == "high"


def test_posture_that_only_reported_again_is_no_change_and_a_stronger_setting_is_info():
    def mutate(fleet):
        for device_id in fleet.devices:
            set_posture(fleet, device_id, boot="medium", collected="2026-11-23T10:30:00+00:00")
        fleet.posture["startup_settings"]["id-002"]["secure_boot_level"] = "full"
    events = diff(mutate, fleet=posture_fleet(3, boot="medium")).events
    assert {event["device_id"]: event["severity"] for event in events} == {"id-002": "info"}


def test_a_category_one_snapshot_could_not_read_reports_nothing():
    def lose_permission(fleet):
        del fleet.posture["application_firewall"]
        set_posture(fleet, "id-001", firewall=False)
        del fleet.posture["application_firewall"]
    assert diff(lose_permission, fleet=posture_fleet(3)).events == []


# --- gaps: what was not read is unknown, carried from the last read (in-memory fleet) ----------

def posture_runs(count: int = 3):
    """An in-memory fleet and a function that collects and diffs once, returning (manifest, device events)."""
    store = MemoryObjectStore()
    fleet = posture_fleet(count)
    publisher = MemoryPublisher()

    def run(hour: int):
        before = len(publisher.events)
        manifest = fleet.collect(store, hour=hour)
        SnapshotDiffer(store, publisher).run(manifest.snapshot_id)
        return manifest, [e for e in publisher.events[before:] if e["change_type"] != "snapshot_summary"]
    return store, fleet, run


def row_of(store, manifest, device_id: str) -> dict:
    return next(row for row in posture_rows(store, manifest) if row["device_id"] == device_id)


@pytest.mark.parametrize("unread, status", [
    (lambda fleet: fleet.posture.pop("application_firewall"), "forbidden"),
    (lambda fleet: fleet.posture_errors.update(application_firewall=KandjiApiError("500", status=500)), "failed"),
    (lambda fleet: fleet.posture_errors.update(application_firewall=KandjiApiError("404", status=404)),
     "unavailable"),
    (lambda fleet: fleet.posture_errors.update(application_firewall=KandjiApiError("400", status=400)),
     "unavailable"),
    (lambda fleet: fleet.posture_errors.update(application_firewall=BudgetExhausted("spent")), "no_budget"),
])
def test_a_category_unread_for_runs_is_carried_marked_and_the_change_made_meanwhile_published_on_its_read(
        unread, status):
    store, fleet, run = posture_runs()
    first, _ = run(9)
    set_posture(fleet, "id-001", firewall=False)  # turned off while the category cannot be read
    firewall = dict(fleet.posture["application_firewall"])
    unread(fleet)
    second, events = run(10)
    assert events == []  # unknown: nothing reported...
    assert second.document["posture"]["categories"]["application_firewall"]["status"] == status
    assert second.document["posture"]["categories"]["application_firewall"]["carried"] == 3
    assert second.document["posture"]["categories"]["application_firewall"]["error"]  # says why
    row = row_of(store, second, "id-001")  # ...and the last read is kept, marked with when it was read
    assert row["application_firewall"]["status"] is True
    assert row["carried_from"]["application_firewall"] == first.document["finished_at"]  # known as of then
    assert row["carried_from"]["filevault"] is None  # read this run
    third, events = run(11)  # still unread: carried from the same read, still nothing
    assert events == [] and row_of(store, third, "id-001")["carried_from"] == row["carried_from"]
    fleet.posture_errors.clear()
    fleet.posture["application_firewall"] = firewall
    fourth, events = run(12)  # read again: compared with the last read, so the change is published now
    assert high_reasons(events) == {"id-001": {"firewall turned off"}}
    assert row_of(store, fourth, "id-001")["carried_from"] is None
    assert run(13)[1] == []  # once


def test_a_device_missing_from_a_category_read_is_unknown_there_and_a_finding_only_where_its_row_says_so():
    store, fleet, run = posture_runs()
    first, _ = run(9)
    gatekeeper = fleet.posture["gatekeeper_and_xprotect"].pop("id-001")  # no row: not "XProtect disabled"
    second, events = run(10)
    assert events == []
    assert second.document["posture"]["categories"]["gatekeeper_and_xprotect"]["carried"] == 1
    assert row_of(store, second, "id-001")["gatekeeper_and_xprotect"]["xprotect_version"] == "5283"
    assert row_of(store, second, "id-000")["carried_from"] is None
    fleet.posture["gatekeeper_and_xprotect"]["id-001"] = gatekeeper
    assert run(11)[1] == []  # back, as it was: nothing
    fleet.posture["gatekeeper_and_xprotect"]["id-001"] = {**gatekeeper, "xprotect_version": None,
                                                          "gatekeeper_version": None}
    fleet.posture["startup_settings"]["id-001"]["secure_boot_level"] = None  # gone from the row: unknown
    _, events = run(12)  # the row is there and no longer gives the XProtect version: the rule's finding
    assert [(c["field"], c["before"], c["after"], c["severity"]) for e in events for c in e["changes"]] == [
        ("posture.gatekeeper_and_xprotect.xprotect_version", "5283", None, "high")]
    assert high_reasons(events) == {"id-001": {"XProtect disabled"}}


def test_a_filevault_row_without_a_status_is_unknown_and_stale_details_saying_off_invent_nothing():
    store, fleet, run = posture_runs(1)
    fleet.details["id-000"]["filevault"]["filevault_enabled"] = False
    set_posture(fleet, "id-000", filevault=False)
    run(9)
    set_posture(fleet, "id-000", filevault=True)  # turned on: Prism sees it...
    fleet.unenrolled.add("id-000")  # ...the details are not re-read: they still say off
    _, events = run(10)
    assert fact_changes(events) == {"id-000": [("posture.filevault.status", False, True, "info")]}
    fleet.posture["filevault"]["id-000"]["status"] = None  # Prism's row says nothing of FileVault
    second, events = run(11)
    assert events == []
    assert row_of(store, second, "id-000")["filevault"]["status"] is True  # the last word Prism said
    fleet.posture_errors["filevault"] = KandjiApiError("500", status=500)  # and then Prism fails
    assert run(12)[1] == []
    fleet.posture_errors.clear()
    fleet.unenrolled.clear()
    fleet.details["id-000"]["filevault"]["filevault_enabled"] = True
    set_posture(fleet, "id-000", filevault=True)
    assert fact_changes(run(13)[1]) == {}  # the details catch up with what Prism said: not again


def test_a_filevault_status_prism_never_gave_is_unknown_not_off():
    """Unknown is not false: a Prism FileVault row whose status is null, with no earlier status to carry,
    says nothing; the details' "on" stays the fact, no "FileVault turned off" is invented, and the details
    seeing it off later is the one high change."""
    store, fleet, run = posture_runs(1)
    prism_row = fleet.posture["filevault"].pop("id-000")  # no Prism row yet: the details (on) are the fact
    run(9)
    fleet.posture["filevault"]["id-000"] = {**prism_row, "status": None}  # a row, but no status in it
    second, events = run(10)
    assert events == []
    assert row_of(store, second, "id-000")["filevault"]["status"] is None  # nothing known to carry
    fleet.details["id-000"]["filevault"]["filevault_enabled"] = False
    third, events = run(11)
    assert fact_changes(events) == {"id-000": [("filevault.filevault_enabled", True, False, "high")]}
    assert row_of(store, third, "id-000")["carried_from"] is None  # a row that said nothing is not carried
    assert "carried" not in third.document["posture"]["categories"]["filevault"]


def test_a_carried_category_keeps_its_unknown_columns_and_its_read_again_publishes_nothing():
    """A category not read this run keeps what its last read said, the columns the schema does not know
    (kept in `extra`) included: read again unchanged, it is no change."""
    store, fleet, run = posture_runs(1)
    fleet.posture["filevault"]["id-000"]["unheard_of"] = "x"
    fleet.posture["application_firewall"]["id-000"]["unheard_of"] = "y"  # another category's, read every run
    run(9)
    fleet.posture_errors["filevault"] = KandjiApiError("500", status=500)
    second, events = run(10)
    assert events == []
    row = row_of(store, second, "id-000")
    assert json.loads(row["extra"]) == {"filevault.unheard_of": "x", "application_firewall.unheard_of": "y"}
    assert row["filevault"]["status"] is True and row["carried_from"]["filevault"] is not None
    fleet.posture_errors.clear()
    assert run(11)[1] == []


def test_an_unknown_column_of_a_category_read_on_both_sides_is_compared_and_of_one_never_read_is_not():
    """Columns the schema does not know (kept in `extra`) are compared like the others, only for the
    categories both snapshots know: a category never read before says nothing yet."""
    store, fleet, run = posture_runs(1)
    fleet.posture["filevault"]["id-000"]["unheard_of"] = "x"
    firewall = fleet.posture.pop("application_firewall")  # not read: forbidden
    run(9)
    fleet.posture["filevault"]["id-000"]["unheard_of"] = "y"
    fleet.posture["application_firewall"] = firewall
    firewall["id-000"]["unheard_of"] = "z"  # read for the first time: nothing to compare with
    _, events = run(10)
    assert [(c["field"], c["before"], c["after"], c["severity"]) for e in events for c in e["changes"]] == [
        ("posture.extra.filevault.unheard_of", "x", "y", "info")]


def test_a_device_no_source_says_anything_of_filevault_for_still_has_its_posture_changes_reported():
    store, fleet, run = posture_runs(1)
    del fleet.details["id-000"]["filevault"]  # neither the details...
    del fleet.posture["filevault"]["id-000"]  # ...nor Prism know FileVault for it (not a Mac, say)
    run(9)
    set_posture(fleet, "id-000", firewall=False)
    del fleet.posture["filevault"]["id-000"]
    _, events = run(10)
    assert high_reasons(events) == {"id-000": {"firewall turned off"}} and fact_changes(events) == {}


def test_a_device_missing_from_the_first_category_keeps_the_categories_after_it():
    store, fleet, run = posture_runs(2)
    del fleet.posture[POSTURE_CATEGORIES[0]]["id-000"]  # no row, nothing earlier to carry
    fleet.posture["device_information"]["id-001"].update(mdm_enabled=True, agent_installed=True)
    fleet.posture["filevault"]["id-001"]["device__family"] = "Mac"  # the device's own column: not the category's
    first, _ = run(9)
    row = row_of(store, first, "id-000")
    assert row[POSTURE_CATEGORIES[0]] is None
    assert all(row[category] is not None for category in POSTURE_CATEGORIES[1:])
    other = row_of(store, first, "id-001")
    assert other["device_information"]["device_family"] == "Mac"
    assert not {"mdm_enabled", "agent_installed"} & set(other["device_information"])  # the devices table's
    assert "mdm_enabled" not in (other["extra"] or "") and "agent_installed" not in (other["extra"] or "")
    assert "device_family" not in other["filevault"] and "filevault.device_family" not in (other["extra"] or "")
    assert first.document["posture"]["fetched_at"].startswith("2026-11-23T09")  # when the categories were read


def test_once_the_budget_is_spent_every_later_category_is_skipped_as_no_budget_and_carried():
    store, fleet, run = posture_runs(1)
    run(9)
    set_posture(fleet, "id-000", sip=False)  # changed while unread: published when read again
    fleet.posture_errors[POSTURE_CATEGORIES[0]] = BudgetExhausted("the budget is spent")
    second, events = run(10)
    assert events == []
    categories = second.document["posture"]["categories"]
    assert categories[POSTURE_CATEGORIES[0]]["error"] == "the budget is spent"
    assert all(categories[name]["status"] == "no_budget" and categories[name]["error"]
               for name in POSTURE_CATEGORIES)
    assert row_of(store, second, "id-000")["startup_settings"]["sip"] is True
    fleet.posture_errors.clear()
    _, events = run(11)
    assert high_reasons(events) == {"id-000": {"SIP disabled"}}


def test_a_filevault_off_seen_by_the_details_while_prism_fails_is_reported_once_while_prism_still_fails():
    """Prism's carried word is known as of the run that read it, not of later runs: details re-read later are
    newer, so the fact stays "off" across runs that do not re-read the details (no flip-flop, no repeat)."""
    store, fleet, run = posture_runs(1)
    run(9)
    fleet.posture_errors["filevault"] = KandjiApiError("500", status=500)
    fleet.details["id-000"]["filevault"]["filevault_enabled"] = False
    _, events = run(10)
    assert fact_changes(events) == {"id-000": [("filevault.filevault_enabled", True, False, "high")]}
    fleet.unenrolled.add("id-000")  # the details are not re-read: carried
    assert run(11)[1] == []
    fleet.unenrolled.clear()  # read again, still off
    assert run(12)[1] == []


def test_a_filevault_change_catching_up_keeps_the_changes_after_it_and_a_demoted_change_loses_its_reason():
    catch_up = {"field": DETAILS, "before": True, "after": False, "severity": "high", "reason": "FileVault turned off"}
    escrow = {"field": "posture.filevault.key_escrowed", "before": True, "after": False, "severity": "info"}
    assert reconcile_filevault([catch_up, escrow], False, False) == [escrow]
    prism = {"field": PRISM, "before": True, "after": False, "severity": "high", "reason": "FileVault turned off"}
    assert reconcile_filevault([catch_up, prism], True, False) == [
        {"field": DETAILS, "before": True, "after": False, "severity": "info"}, prism]


def test_a_snapshot_written_before_posture_existed_makes_posture_unknown_not_changed():
    store, fleet, run = posture_runs(1)
    first, _ = run(9)
    del first.document["tables"]["device_posture"]  # as an older version wrote it
    write_manifest(store, first)
    set_posture(fleet, "id-000", firewall=False)
    fleet.details["id-000"]["general"]["device_name"] = "Renamed"
    _, events = run(10)
    assert [change["field"] for event in events for change in event["changes"]] == ["general.device_name"]


def test_a_previous_row_is_parsed_only_for_a_category_it_holds_and_its_column_is_found_by_its_first_key():
    from kandji_snapshots.collect.posture import _is_null_column
    from kandji_snapshots.snapshots.normalize import encode_row, posture_row
    from kandji_snapshots.snapshots.schema import DEVICE_POSTURE

    # The first `"<category>":` of a line is the column: categories come before carried_from (whose fields
    # bear their names), and no category has a field named like a category.
    columns = list(DEVICE_POSTURE)
    assert all(columns.index(name) < columns.index("carried_from") for name in POSTURE_CATEGORIES)
    assert not {field for fields in POSTURE_CATEGORY_COLUMNS.values() for field in fields} & set(POSTURE_CATEGORIES)
    categories = {**dict.fromkeys(POSTURE_CATEGORIES), "application_firewall": {"status": True}}
    line = encode_row(posture_row(categories, "20261123T100000Z", 'x","filevault":{"status":true}', "t",
                                  {"filevault": "2026-11-23T09:05:00.000000Z"}))
    assert _is_null_column(line, "filevault") and _is_null_column(line, "startup_settings")
    assert not _is_null_column(line, "application_firewall")


def source(field: str, enabled: bool, known_at: str, fresh: bool = False) -> FileVaultSource:
    return FileVaultSource(field, enabled, f"2026-11-23T{known_at}:00:00.000000Z", fresh)


PRISM, DETAILS = FILEVAULT_FIELDS[1], FILEVAULT_FIELDS[0]


@pytest.mark.parametrize("sources, fact", [
    ([source(PRISM, True, "10", fresh=True), source(DETAILS, False, "11")], True),  # read now: Prism
    ([source(PRISM, True, "10"), source(DETAILS, False, "09")], True),  # carried, but later than the details
    ([source(PRISM, True, "10"), source(DETAILS, False, "11")], False),  # the details were read since
    ([source(PRISM, True, "10"), source(DETAILS, False, "10")], True),  # a tie: Prism
    ([source(DETAILS, False, "09")], False),
    ([], None),
])
def test_the_filevault_fact_is_what_the_last_source_that_knew_said(sources, fact):
    found = filevault_fact(sources)
    assert (found.enabled if found else None) is fact


def test_details_fetched_in_the_run_that_last_read_prism_are_not_newer_than_it_and_later_ones_are():
    store, fleet, run = posture_runs(1)
    run(9)
    fleet.details["id-000"]["filevault"]["filevault_enabled"] = False  # the details say off, Prism on:
    _, events = run(10)  # Prism, read this run, is the fact; the details' word is news, info
    assert fact_changes(events) == {"id-000": [("filevault.filevault_enabled", True, False, "info")]}
    fleet.posture_errors["filevault"] = KandjiApiError("500", status=500)
    fleet.unenrolled.add("id-000")  # details fetched after Prism's read, but in the same run: no newer
    assert run(11)[1] == []
    fleet.unenrolled.clear()  # the details are read again, after Prism last spoke, and still say off
    _, events = run(12)
    assert fact_changes(events) == {"id-000": [("filevault.filevault_enabled", True, False, "high")]}
    fleet.posture_errors.clear()
    set_posture(fleet, "id-000", filevault=False)  # Prism agrees when it is read again: not again
    assert fact_changes(run(13)[1]) == {}


def test_a_filevault_change_from_or_to_unknown_is_no_change():
    changes = [{"field": PRISM, "before": True, "after": None, "severity": "info"},
               {"field": DETAILS, "before": None, "after": False, "severity": "info"},
               {"field": "posture.filevault.key_escrowed", "before": True, "after": False, "severity": "info"}]
    assert reconcile_filevault(changes, True, True) == changes[2:]
    assert reconcile_filevault(changes, True, False, DETAILS) == [
        changes[2], {"field": DETAILS, "before": True, "after": False, "severity": "high",
                     "reason": "FileVault turned off"}]


def filevault_runs(count: int = 2):
    """An in-memory fleet and a function that collects and diffs once, returning the run's device events."""
    store = MemoryObjectStore()
    fleet = posture_fleet(count)
    publisher = MemoryPublisher()

    def run(hour: int) -> list[dict]:
        before = len(publisher.events)
        manifest = fleet.collect(store, hour=hour)
        SnapshotDiffer(store, publisher).run(manifest.snapshot_id)
        return [e for e in publisher.events[before:] if e["change_type"] != "snapshot_summary"]
    return fleet, run


def fact_changes(events: list[dict]) -> dict[str, list[tuple]]:
    """device -> its changes of the FileVault fact's two fields, as (field, before, after, severity)."""
    out = {}
    for event in events:
        changes = [(c["field"], c["before"], c["after"], c["severity"]) for c in event.get("changes", [])
                   if c["field"] in FILEVAULT_FIELDS]
        if changes:
            out[event["device_id"]] = changes
    return out


PRISM_OFF = ("posture.filevault.status", True, False, "high")


def test_filevault_off_is_reported_once_whether_prism_or_details_sees_it_first():
    fleet, run = filevault_runs()
    run(9)
    set_posture(fleet, "id-000", filevault=False)  # Prism sees it first...
    assert fact_changes(run(10)) == {"id-000": [PRISM_OFF]}
    fleet.details["id-000"]["filevault"]["filevault_enabled"] = False  # ...the details catch up later: not again
    assert run(11) == []
    fleet.details["id-001"]["filevault"]["filevault_enabled"] = False  # details first (Prism not yet)...
    del fleet.posture["filevault"]["id-001"]  # ...while Prism has no row for it: unknown, not "null"
    assert fact_changes(run(12)) == {"id-001": [("filevault.filevault_enabled", True, False, "high")]}
    set_posture(fleet, "id-001", filevault=False)  # Prism reports it again, off: nothing new
    assert run(13) == []


def test_filevault_seen_off_by_both_sources_in_one_run_is_one_high_change_on_prism():
    fleet, run = filevault_runs(1)
    run(9)
    set_posture(fleet, "id-000", filevault=False)
    fleet.details["id-000"]["filevault"]["filevault_enabled"] = False
    assert fact_changes(run(10)) == {"id-000": [("filevault.filevault_enabled", True, False, "info"), PRISM_OFF]}


def test_filevault_back_on_in_the_details_while_prism_still_says_off_is_a_new_change():
    fleet, run = filevault_runs(1)
    run(9)
    set_posture(fleet, "id-000", filevault=False)
    assert fact_changes(run(10)) == {"id-000": [PRISM_OFF]}
    fleet.details["id-000"]["filevault"]["filevault_enabled"] = False
    assert run(11) == []  # the details catch up
    fleet.details["id-000"]["filevault"]["filevault_enabled"] = True  # back on, Prism not yet
    assert fact_changes(run(12)) == {"id-000": [("filevault.filevault_enabled", False, True, "info")]}
    set_posture(fleet, "id-000", filevault=True)  # Prism agrees: its own change, reported
    assert fact_changes(run(13)) == {"id-000": [("posture.filevault.status", False, True, "info")]}
    set_posture(fleet, "id-000", filevault=False)  # and off again: a new transition, high again
    assert fact_changes(run(14)) == {"id-000": [PRISM_OFF]}


# --- through the handlers: budget, freshness, permissions ------------------------------------
# (A FileVault flip Prism published, not published again when a rolling refresh re-reads the details:
# test_fleet_rules.py, on an in-memory fleet under the same budget.)

def snapshot_rows(manifest: dict, table: str) -> list[dict]:
    return read_rows(manifest["tables"][table]["keys"])


def latest_manifest() -> dict:
    from aws_helpers import manifests
    return max(manifests(), key=lambda m: m["snapshot_id"])


BUDGET_SHORT_OF_THE_FLEET = 80  # requests per run: Prism and the device list, and details for part of the fleet


def first_run_short_of_budget(seed: int, deployment, lambda_context, monkeypatch) -> tuple[Fleet, KandjiSimulator]:
    """120 devices (two Prism pages per category) collected and diffed once on a budget of 80: the details
    cover part of the fleet."""
    monkeypatch.setenv("KANDJI_REQUEST_BUDGET", str(BUDGET_SHORT_OF_THE_FLEET))
    fleet = Fleet.generate(120, seed=seed)
    sim = start(fleet, monkeypatch)
    try:
        collect_and_diff(lambda_context)
    except BaseException:
        sim.stop()
        raise
    deployment("all")
    return fleet, sim


def test_with_a_budget_short_of_the_fleet_posture_still_covers_every_device_every_run(
        deployment, lambda_context, monkeypatch):  # noqa: F811 (fixture)
    fleet, sim = first_run_short_of_budget(31, deployment, lambda_context, monkeypatch)
    try:
        first = latest_manifest()
        assert first["pending_devices"] > 0  # rolling refresh: details could not cover the fleet
        fetched = {row["device_id"] for row in snapshot_rows(first, "device_details") if row["fetched_at"]}
        macs = [d for d in fleet.device_ids() if fleet.platform(d) == "Mac"]
        stale = [d for d in macs if d in fetched]  # carried, not refreshed, in the next run
        firewall_on = {row["device_id"] for row in sim.prism.rows("application_firewall") if row["status"]}
        firewall_off = [d for d in stale if d in firewall_on][:3]
        filevault_off = [d for d in stale if d not in firewall_off
                         and fleet.details(d)["filevault"]["filevault_enabled"] is True][:3]
        assert len(firewall_off) == len(filevault_off) == 3  # else the checks below would hold on nothing
        for device_id in firewall_off:
            sim.prism.set(device_id, "application_firewall", status=False)
        for device_id in filevault_off:
            fleet.set_filevault(device_id, False)
        collect_and_diff(lambda_context)
        second = latest_manifest()
        events = deployment("all")
    finally:
        sim.stop()
    for manifest in (first, second):
        assert manifest["requests"]["total"] <= BUDGET_SHORT_OF_THE_FLEET
        rows = snapshot_rows(manifest, "device_posture")
        assert len(rows) == manifest["device_count"] == len(fleet)
        assert {row["fetched_at"] for row in rows} == {manifest["posture"]["fetched_at"]}
        assert sum(row["application_firewall"] is not None for row in rows) == len(macs)
        assert {name: read["devices"] for name, read in manifest["posture"]["categories"].items()} == {
            name: len(sim.prism.rows(name)) for name in POSTURE_CATEGORIES}
    changed = {event["device_id"]: event for event in events if event["change_type"] == "device_changed"}
    assert set(changed) == set(firewall_off) | set(filevault_off)
    assert high_reasons(list(changed.values())) == {
        **{d: {"firewall turned off"} for d in firewall_off}, **{d: {"FileVault turned off"} for d in filevault_off}}
    # The details catching up with FileVault in a later run publish nothing high: test_fleet_rules.py.


def test_a_token_without_prism_permissions_still_gets_complete_snapshots(deployment, lambda_context,
                                                                         monkeypatch):  # noqa: F811
    fleet = Fleet.generate(50, seed=32)
    sim = start(fleet, monkeypatch)
    sim.permissions = {"devices", "details", "apps"}
    try:
        collect_and_diff(lambda_context)
        fleet.apply_demo_changes()
        collect_and_diff(lambda_context)
        events = deployment("all")
    finally:
        sim.stop()
    manifest = latest_manifest()
    assert manifest["device_count"] == len(fleet) and manifest["skipped_devices"] == []
    assert len(snapshot_rows(manifest, "device_details")) == len(fleet)
    assert manifest["tables"]["device_apps"]["rows"] == sum(fleet.app_count(d) for d in fleet.device_ids())
    posture = snapshot_rows(manifest, "device_posture")
    assert len(posture) == len(fleet) and all(row[name] is None for row in posture for name in POSTURE_CATEGORIES)
    assert manifest["posture"]["missing_permissions"] == [prism_permission(name) for name in POSTURE_CATEGORIES]
    assert {e["change_type"] for e in events} >= {"device_added", "device_removed", "device_changed"}
    assert any(c.get("reason") == "FileVault turned off" for e in events for c in e.get("changes", []))


# --- the saved queries, run with DuckDB over a local folder ----------------------------------

def test_the_posture_queries_find_the_firewall_off_sip_disabled_and_what_changed(tmp_path):
    from datetime import datetime, timedelta, timezone

    from local_pipeline import collect_with_simulator

    from kandji_snapshots.query import local_duckdb
    from kandji_snapshots.snapshots.storage import LocalObjectStore

    now = datetime.now(timezone.utc).replace(microsecond=0)
    fleet = Fleet.generate(30, seed=33)
    fleet.clock = lambda: now - timedelta(minutes=90)
    store = LocalObjectStore(tmp_path)
    with KandjiSimulator(fleet, token=TOKEN, rate_limit_per_hour=None) as sim:
        first = collect_with_simulator(sim, store, now - timedelta(hours=2))
        macs = [row["device_id"] for row in sim.prism.rows("startup_settings") if row["sip"]]
        sim.prism.set(macs[0], "application_firewall", status=False)
        sim.prism.set(macs[1], "startup_settings", sip=False)
        firewall_off = {row["serial_number"] for row in sim.prism.rows("application_firewall") if not row["status"]}
        sip_off = {row["serial_number"] for row in sim.prism.rows("startup_settings") if not row["sip"]}
        second = collect_with_simulator(sim, store, now - timedelta(hours=1))
    for manifest in (first, second):
        SnapshotDiffer(store, MemoryPublisher()).run(manifest.snapshot_id)
    con = local_duckdb.connect(tmp_path)
    assert {row["serial_number"] for row in local_duckdb.run_query(con, "firewall_off") if row["status"] == "off"} \
        == firewall_off
    assert {row["serial_number"] for row in local_duckdb.run_query(con, "sip_disabled") if row["status"] == "off"} \
        == sip_off
    changes = {(row["serial_number"], row["change_field"], row["value_after"], row["change_reason"])
               for row in local_duckdb.run_query(con, "posture_changes")}
    serial = {device_id: fleet.list_item(device_id)["serial_number"] for device_id in macs[:2]}
    assert changes == {(serial[macs[0]], "posture.application_firewall.status", "false", "firewall turned off"),
                       (serial[macs[1]], "posture.startup_settings.sip", "false", "SIP disabled")}
