"""An in-memory Kandji API for unit tests of the collector's domain (no HTTP)."""

from __future__ import annotations

import functools
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from kandji_snapshots.errors import DeviceNotFound, KandjiAuthError


class FakeKandjiApi:
    host = "acme.api.kandji.io"

    def __init__(self, devices, details=None, apps=None, prism=None):
        self.devices = list(devices)
        self.prism = dict(prism or {})  # posture category -> rows; a category left out answers 403
        self.details = dict(details or {})
        self.apps = dict(apps or {})
        self.unenrolled: set[str] = set()
        self.fail_on: dict[str, Exception] = {}
        self.calls: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()

    def _record(self, endpoint, device_id=None):
        with self._lock:
            self.calls.append((endpoint, device_id))
        error = self.fail_on.get(f"{endpoint}:{device_id}") or self.fail_on.get(endpoint)
        if error:
            raise error
        if device_id in self.unenrolled:
            raise DeviceNotFound("404", status=404, endpoint=endpoint)

    def list_devices(self):
        self._record("devices")
        return list(self.devices)

    def device_details(self, device_id):
        self._record("details", device_id)
        return self.details.get(device_id, {})

    def device_apps(self, device_id):
        self._record("apps", device_id)
        return self.apps.get(device_id, [])

    def iter_prism_category(self, category):
        if category not in self.prism:  # like a token without the category's permission
            raise KandjiAuthError("403", status=403, endpoint=f"prism_{category}")
        self._record(f"prism_{category}")
        yield from self.prism[category]


class StepClock:
    """A clock that moves one second per reading, so snapshot ids and timings are predictable."""

    def __init__(self, start=datetime(2026, 11, 23, 10, 0, 0, tzinfo=timezone.utc)):
        self.now = start
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            current = self.now
            self.now += timedelta(seconds=1)
            return current


def device(device_id, **fields):
    base = {"device_id": device_id, "device_name": f"Mac {device_id}", "serial_number": f"C02{device_id}",
            "platform": "Mac", "os_version": "15.1", "last_check_in": "2026-11-23 09:00:00+00:00",
            "user": "", "mdm_enabled": True, "agent_installed": True, "is_missing": False, "is_removed": False}
    base.update(fields)
    return base


def auth_error():
    return KandjiAuthError("401", status=401, endpoint="details")


class RunClock:
    """Each collector run starts one hour after the previous one (distinct snapshot ids), then runs in real
    time: monotonic time and sleeps are the system's (the simulator's rate-limit windows are real)."""

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    def __init__(self) -> None:
        self.start = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
        self._started = time.monotonic()

    def next_run(self) -> None:
        self.start += timedelta(hours=1)
        self._started = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._started)


class FakeClock:
    """A clock on which waiting takes no time: `sleep` moves it on, so a run that backs off until its
    deadline gets there at once. Shared by every worker thread of a run."""

    def __init__(self, start: datetime = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)) -> None:
        self.start = start
        self.elapsed = 0.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.elapsed += max(0.0, seconds)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)


def run_handler_on(clock, event: dict, context) -> dict:
    """The collector Lambda's handler, with its run on `clock` instead of the system's."""
    from conftest import load_handler
    from kandji_snapshots.collect import runtime

    handler = load_handler("collector")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(handler, "run_collection", functools.partial(runtime.run_collection, clock=clock))
        return handler.lambda_handler(event, context)
