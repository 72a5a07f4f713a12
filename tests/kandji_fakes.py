"""Kandji stand-ins for tests: an in-memory API for unit tests of the collector's domain (no HTTP),
fake clocks, and a real client of the HTTP simulator."""

from __future__ import annotations

import functools
import threading
from datetime import datetime, timedelta, timezone

import pytest

from kandji_snapshots.errors import DeviceNotFound, KandjiAuthError
from kandji_snapshots.kandji.client import KandjiClient, RetryPolicy
from kandji_snapshots.kandji.config import parse_secret
from kandji_snapshots.kandji.rate_limiter import RateLimiter


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


class FakeClock:
    """A clock on which waiting takes no time: `sleep` moves it on at once, so a run that backs off until its
    deadline gets there without waiting. Shared by every worker thread of a run, and it can stand in for the
    simulator's `time` too (`time`, `monotonic`, `sleep`), so both sides of a rate limit read the same time.

    Waits overlap as real ones do: a thread's sleep lasts from the moment it last read the clock, and the
    clock moves to the latest such wake-up. Eight workers that each wait a second from the same moment
    bring it one second on, not eight; a wait checked against a deadline never carries it past it."""

    def __init__(self, start: datetime = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)) -> None:
        self.start = start
        self.elapsed = 0.0
        self._lock = threading.Lock()
        self._read_at = threading.local()  # per thread: the clock's value when that thread last read it

    def _read(self) -> float:
        with self._lock:
            self._read_at.value = self.elapsed
            return self.elapsed

    def monotonic(self) -> float:
        return self._read()

    def time(self) -> float:
        """Seconds since the epoch, for the simulator's rate-limit windows."""
        return self.start.timestamp() + self._read()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self._read())

    def sleep(self, seconds: float) -> None:
        with self._lock:
            since = getattr(self._read_at, "value", self.elapsed)
            self.elapsed = max(self.elapsed, since + max(0.0, seconds))
            self._read_at.value = self.elapsed


class RunClock:
    """A FakeClock for each collector run, starting one hour after the previous run's: distinct snapshot ids,
    known in advance (the first run's is 20261123T100000Z)."""

    def __init__(self) -> None:
        self.start = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
        self.current = FakeClock(self.start)

    def next_run(self) -> FakeClock:
        self.start += timedelta(hours=1)
        self.current = FakeClock(self.start)
        return self.current


def run_handler_on(clock, event: dict, context) -> dict:
    """The collector Lambda's handler, with its run on `clock` instead of the system's."""
    from conftest import load_handler

    from kandji_snapshots.collect import runtime

    handler = load_handler("collector")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(handler, "run_collection", functools.partial(runtime.run_collection, clock=clock))
        return handler.lambda_handler(event, context)


def simulator_client(sim, token: str) -> KandjiClient:
    """The real client of a simulator on loopback: paced far above its limits, retrying fast."""
    credentials = parse_secret(token, fallback_url=sim.api_url, allow_insecure_localhost=True)
    return KandjiClient(credentials, limiter=RateLimiter(1000), retry=RetryPolicy(max_attempts=3, base_backoff=0.01))
