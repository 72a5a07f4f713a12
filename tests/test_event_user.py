"""Change events name the device's assigned user (issue 14: "on which device, with name, serial and user").

Real snapshots (the collector over a fake fleet) diffed in memory; the user comes from the devices
row of the current snapshot, or of the previous one for a removed device, and never changes an event id.
"""

from __future__ import annotations

from differ_fixtures import SECOND, FakeFleet, app, diff

from kandji_snapshots.diff.events import event_user
from kandji_snapshots.diff.messages import chat_notification, event_email, event_subject, user_label

NOAH = {"email": "noah@example.com", "name": "Noah Ames", "id": "9", "is_archived": False}


def events_between(first, second) -> list[dict]:
    """Diff two snapshots of a 4-device fleet: `first(fleet)` before the first, `second(fleet)` between."""
    fleet = FakeFleet.of(4)
    first(fleet)
    return diff(second, fleet=fleet).events


def changes(fleet: FakeFleet) -> None:
    """One event of every kind a person reads: changed, app installed/updated/removed, added, removed."""
    fleet.details["id-000"]["filevault"]["filevault_enabled"] = False
    fleet.apps["id-001"][0]["version"] = "121.0"
    fleet.apps["id-001"].append(app("1Password", "com.1password.1password", "8.10"))
    fleet.apps["id-001"].pop(1)
    fleet.remove("id-002")
    fleet.add("id-009")


def by_type(events: list[dict]) -> dict[str, dict]:
    return {event["change_type"]: event for event in events}


def test_every_device_event_names_the_user_of_its_devices_row():
    def noah_has_id_001(fleet):
        fleet.devices["id-001"]["user"] = dict(NOAH)
        fleet.devices["id-002"]["user"] = dict(NOAH, name="Bo Lind", email="bo@example.com")

    def and_then(fleet):
        changes(fleet)
        fleet.devices["id-009"]["user"] = dict(NOAH, name="Cy New", email="cy@example.com")

    events = by_type(events_between(noah_has_id_001, and_then))
    assert set(events) == {"device_added", "device_removed", "device_changed", "app_installed", "app_updated",
                           "app_removed"}
    ann = {"email": "ann@example.com", "name": "Ann"}  # the fleet's default user; id and is_archived left out
    assert events["device_changed"]["user"] == ann
    for change_type in ("app_installed", "app_updated", "app_removed"):
        assert events[change_type]["user"] == {"email": "noah@example.com", "name": "Noah Ames"}, change_type
    assert events["device_added"]["user"] == {"email": "cy@example.com", "name": "Cy New"}
    # Removed: only the previous snapshot has the device, so its row tells whose it was.
    assert events["device_removed"]["user"] == {"email": "bo@example.com", "name": "Bo Lind"}
    # The user sits with the device's other identifying fields.
    keys = list(events["device_changed"])
    assert keys.index("user") == keys.index("platform") + 1


def test_the_user_is_the_current_one_when_the_device_changes_hands():
    def reassign(fleet):
        fleet.devices["id-001"]["user"] = dict(NOAH)

    [event] = events_between(lambda fleet: None, reassign)
    assert event["change_type"] == "device_changed" and event["device_id"] == "id-001"
    assert event["user"] == {"email": "noah@example.com", "name": "Noah Ames"}
    assert {"user.email", "user.name"} <= {change["field"] for change in event["changes"]}


def test_a_device_without_a_user_has_user_null():
    def nobody(fleet):
        fleet.devices["id-000"]["user"] = ""  # how Kandji lists a device with no assigned user

    events = events_between(nobody, lambda fleet: fleet.details["id-000"]["filevault"].update(
        filevault_enabled=False))
    [event] = events
    assert "user" in event and event["user"] is None
    assert event_user("") is None and event_user({"email": "", "name": None, "id": "1"}) is None
    assert event_user({"email": "x@y.z"}) == {"email": "x@y.z", "name": None}


def test_the_user_does_not_change_event_ids():
    """The same changes on devices held by other people are the same events: same ids."""
    def everyone_is_noah(fleet):
        for device in fleet.devices.values():
            device["user"] = dict(NOAH)

    def everyone_is_noah_then_changes(fleet):
        changes(fleet)
        everyone_is_noah(fleet)

    as_ann = events_between(lambda fleet: None, changes)
    as_noah = events_between(everyone_is_noah, everyone_is_noah_then_changes)
    assert [event["event_id"] for event in as_ann] == [event["event_id"] for event in as_noah]
    assert {event["user"]["name"] for event in as_ann} == {"Ann"}
    assert {event["user"]["name"] for event in as_noah} == {"Noah Ames"}


def test_people_read_the_user_or_plainly_that_there_is_none():
    event = {"event_id": "e" * 32, "change_type": "app_installed", "severity": "info", "snapshot_id": SECOND,
             "previous_snapshot_id": "20261123T100000Z", "device_id": "id-1", "device_name": "MacBook Pro",
             "serial_number": "JF33TNMMBY", "platform": "Mac",
             "user": {"email": "noah@example.com", "name": "Noah Ames"},
             "app": {"app_name": "Zoom", "bundle_id": "us.zoom.xos", "version": "6.1", "previous_version": None}}
    assert "User:      Noah Ames <noah@example.com>" in event_email(event).splitlines()
    assert event_subject(event) == "[info] Zoom 6.1 installed on MacBook Pro (JF33TNMMBY, Noah Ames)"
    chat = chat_notification(event)["content"]["description"].splitlines()
    assert "*User:* `Noah Ames (noah@example.com)`" in chat

    # The device's name already says whose it is: the subject does not repeat it.
    assert event_subject(dict(event, device_name="Noah's MacBook Pro")).endswith("(JF33TNMMBY)")
    # No room: the user is left out rather than the serial cut.
    long_name = dict(event, device_name="x" * 80, app=dict(event["app"], app_name="y" * 80))
    assert event_subject(long_name).endswith("(JF33TNMMBY)")

    nobody = dict(event, user=None)
    assert "User:      (no user assigned)" in event_email(nobody).splitlines()
    assert "*User:* `(no user assigned)`" in chat_notification(nobody)["content"]["description"].splitlines()
    assert event_subject(nobody) == "[info] Zoom 6.1 installed on MacBook Pro (JF33TNMMBY)"

    # An event without the field (written before events had it) does not claim there is no user.
    unknown = {name: value for name, value in event.items() if name != "user"}
    assert "User:      (unknown)" in event_email(unknown).splitlines()
    assert user_label({"user": {"email": "only@example.com"}}) == "only@example.com"
