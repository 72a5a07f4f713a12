"""Realistic snapshots for the differ's tests: a mutable fake fleet, collected by the real collector.

    fleet = FakeFleet.of(3)                       # id-000 .. id-002, Macs with details and apps
    first = fleet.collect(store, hour=10)         # a committed snapshot (SnapshotCollector)
    fleet.check_in(); fleet.details["id-001"]["filevault"]["filevault_enabled"] = False
    second = fleet.collect(store, hour=11)

    run = diff(lambda fleet: fleet.remove("id-002"))  # both snapshots collected, diffed and published
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

from kandji_fakes import StepClock

from kandji_snapshots.collect.collector import CollectorSettings, SnapshotCollector
from kandji_snapshots.diff.differ import DifferSettings, SnapshotDiffer
from kandji_snapshots.diff.publisher import MemoryPublisher, Message, PublishError
from kandji_snapshots.errors import DeviceNotFound, KandjiAuthError
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.layout import changes_key
from kandji_snapshots.snapshots.storage import MemoryObjectStore, ObjectStore
from kandji_snapshots.snapshots.table_io import iter_rows


def device_item(device_id: str, **fields: Any) -> dict[str, Any]:
    item = {"device_id": device_id, "device_name": f"Mac {device_id}", "model": "MacBook Air (M1, 2020)",
            "serial_number": f"C02{device_id.upper()}", "platform": "Mac", "os_version": "14.5",
            "last_check_in": "2026-11-23 09:00:00+00:00", "user": {"email": "ann@example.com", "name": "Ann",
                                                                   "id": "7", "is_archived": False},
            "blueprint_name": "Engineering", "mdm_enabled": True, "agent_installed": True, "is_missing": False,
            "is_removed": False, "agent_version": "4.5.1", "lost_mode_status": "", "tags": ["eng"]}
    item.update(fields)
    return item


def details_payload(device_id: str) -> dict[str, Any]:
    return {
        "general": {"device_id": device_id, "device_name": f"Mac {device_id}", "platform": "Mac",
                    "os_version": "14.5", "time_since_boot": "2 days, 3:04", "last_user": "ann"},
        "mdm": {"mdm_enabled": "True", "supervised": "True", "last_check_in": "2026-11-23 09:00:00 +0000"},
        "filevault": {"filevault_enabled": True, "filevault_prk_escrowed": True},
        "kandji_agent": {"agent_installed": "True", "agent_version": "4.5.1",
                         "last_check_in": "2026-11-23T09:00:00Z"},
        "lost_mode": {},
        "volumes": [{"name": "Macintosh HD", "format": "APFS", "percent_used": "41%", "capacity": "494.38 GB",
                     "available": "291.2 GB", "encrypted": "Yes"},
                    {"name": "Data", "format": "APFS", "percent_used": "10%", "capacity": "100 GB",
                     "available": "90 GB", "encrypted": "Yes"}],
        "users": {"regular_users": [{"username": "ann", "uid": "501", "name": "Ann", "admin": "Yes"}]},
        "installed_profiles": [{"name": "Wi-Fi - Corp", "uuid": "a1", "verified": "verified"},
                               {"name": "FileVault", "uuid": "b2", "verified": "verified"}],
        "security_information": {"remote_desktop_enabled": False, "firewall_enabled": True},
        "recovery_information": {"recovery_lock_enabled": True, "firmware_password_exist": False,
                                 "firmware_password_pending": False, "password_rotation_scheduled": None,
                                 "password_escrowed": True},
        "activation_lock": {"bypass_code_failed": False, "user_activation_lock_enabled": False,
                            "device_activation_lock_enabled": True,
                            "activation_lock_allowed_while_supervised": True, "activation_lock_supported": True},
    }


def app(name: str, bundle_id: str, version: str, path: str | None = None) -> dict[str, Any]:
    return {"app_name": name, "bundle_id": bundle_id, "version": version,
            "path": path or f"/Applications/{name}.app", "source": "Kandji", "app_id": "1"}


def default_apps() -> list[dict[str, Any]]:
    return [app("Google Chrome", "com.google.Chrome", "120.0"), app("zoom.us", "us.zoom.xos", "6.0.2"),
            app("Slack", "com.tinyspeck.slackmacgap", "4.36")]


class FakeFleet:
    """The three endpoints the collector calls, over plain dicts a test edits between snapshots."""

    host = "acme.api.kandji.io"

    def __init__(self) -> None:
        self.devices: dict[str, dict[str, Any]] = {}
        self.details: dict[str, dict[str, Any]] = {}
        self.apps: dict[str, list[dict[str, Any]]] = {}
        self.unenrolled: set[str] = set()  # listed, but 404 on details: skipped by the collector
        self.check_ins = 0
        # Prism posture: category -> device_id -> that category's columns; a category left out answers 403.
        self.posture: dict[str, dict[str, dict[str, Any]]] = {}
        # category -> the error its read raises after its first row (a read that broke off, 500, no budget).
        self.posture_errors: dict[str, Exception] = {}

    @classmethod
    def of(cls, count: int) -> "FakeFleet":
        fleet = cls()
        for index in range(count):
            fleet.add(f"id-{index:03d}")
        return fleet

    def add(self, device_id: str, apps: list[dict[str, Any]] | None = None, **fields: Any) -> None:
        self.devices[device_id] = device_item(device_id, **fields)
        self.details[device_id] = details_payload(device_id)
        self.apps[device_id] = default_apps() if apps is None else apps

    def remove(self, device_id: str) -> None:
        for table in (self.devices, self.details, self.apps, *self.posture.values()):
            table.pop(device_id, None)

    def check_in(self) -> None:
        """What every device does between two snapshots without anything really changing."""
        self.check_ins += 1
        stamp = f"2026-11-23T{9 + self.check_ins % 12:02d}:{self.check_ins % 60:02d}:00Z"
        for device_id, item in self.devices.items():
            item["last_check_in"] = stamp
            details = self.details[device_id]
            details["mdm"]["last_check_in"] = stamp
            details["kandji_agent"]["last_check_in"] = stamp
            details["general"]["time_since_boot"] = f"{self.check_ins} days, 1:00"
            for volume in details["volumes"]:
                volume["available"] = f"{200 + self.check_ins}.5 GB"
                volume["percent_used"] = f"{40 + self.check_ins}%"

    # --- the KandjiApi protocol ---

    def list_devices(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self.devices.values()))

    def device_details(self, device_id: str) -> dict[str, Any]:
        if device_id in self.unenrolled:
            raise DeviceNotFound("404", status=404, endpoint="details")
        return copy.deepcopy(self.details[device_id])

    def device_apps(self, device_id: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.apps[device_id])

    def iter_prism_category(self, category: str) -> Iterator[dict[str, Any]]:
        if category not in self.posture:
            raise KandjiAuthError("403", status=403, endpoint=f"prism_{category}")
        for device_id, columns in self.posture[category].items():
            yield {"device_id": device_id, "device__name": f"Mac {device_id}", "serial_number": "C02X",
                   **copy.deepcopy(columns)}
            if category in self.posture_errors:
                raise self.posture_errors[category]

    def collect(self, store: ObjectStore, *, hour: int, day: int = 23, minute: int = 0,
                rows_per_part: int = 100_000, on: datetime | None = None) -> Manifest:
        """A snapshot taken at `hour`:`minute` of 2026-11-`day`, or of the day of `on` (the views of the latest
        snapshot read the last three days, so a folder queried for its latest state is collected today)."""
        start = on or datetime(2026, 11, day, tzinfo=timezone.utc)
        clock = StepClock(start.replace(hour=hour, minute=minute, second=0, microsecond=0))
        collector = SnapshotCollector(self, store, clock=clock,
                                      settings=CollectorSettings(max_workers=2, rows_per_part=rows_per_part))
        return collector.collect()


class FlakyPublisher(MemoryPublisher):
    """Fails the `fail_on_batch`-th call (1-based); `accepted` of its messages get through first."""

    def __init__(self, fail_on_batch: int | None = None, accepted: int = 0):
        super().__init__()
        self.fail_on_batch = fail_on_batch
        self.accepted = accepted
        self.calls = 0

    def publish_batch(self, messages: Sequence[Message]) -> None:
        self.calls += 1
        if self.calls == self.fail_on_batch:
            through = list(messages[: self.accepted])
            if through:
                self.batches.append(through)
            raise PublishError("simulated SNS outage", published_ids=[m.id for m in through],
                               failed=[{"Id": m.id, "Code": "InternalError"} for m in messages[self.accepted:]])
        super().publish_batch(messages)


# --- two snapshots of one fleet, diffed -----------------------------------------------------

FIRST, SECOND = "20261123T100000Z", "20261123T110000Z"


class Run:
    """Two snapshots of one fleet, the second after `mutate`, diffed and published."""

    def __init__(self, mutate=lambda fleet: None, *, fleet: FakeFleet | None = None, publisher=None,
                 **settings):
        self.store = MemoryObjectStore()
        self.fleet = fleet or FakeFleet.of(3)
        self.fleet.collect(self.store, hour=10)
        self.fleet.check_in()
        mutate(self.fleet)
        self.fleet.collect(self.store, hour=11)
        self.publisher = publisher if publisher is not None else MemoryPublisher()
        self.settings = DifferSettings(**settings)
        self.result = None

    def run(self):
        self.result = SnapshotDiffer(self.store, self.publisher, settings=self.settings).run(SECOND)
        return self

    @property
    def events(self):
        return [event for event in self.publisher.events if event["change_type"] != "snapshot_summary"]

    @property
    def summaries(self):
        return [event for event in self.publisher.events if event["change_type"] == "snapshot_summary"]

    def changes_file(self):
        return list(iter_rows(self.store, [changes_key(SECOND)]))


def diff(mutate, **kwargs) -> Run:
    return Run(mutate, **kwargs).run()
