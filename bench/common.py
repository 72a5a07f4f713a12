"""Shared by the benchmarks: a simulator in its own process, the collector wired as in Lambda."""

from __future__ import annotations

import logging
import re
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "common"), str(ROOT)]

from kandji_snapshots.collect.runtime import CollectorRun, build_collector  # noqa: E402
from kandji_snapshots.kandji.config import parse_secret  # noqa: E402
from kandji_snapshots.settings import CollectorSettings  # noqa: E402
from kandji_snapshots.snapshots.timeutil import SystemClock  # noqa: E402

TOKEN = "bench-token"
logging.basicConfig(level=logging.ERROR)  # the figures, not the collector's warnings


# Benchmarks get full Prism pages (300 rows, the documented maximum); the simulator's default serves
# shorter pages (a quirk the tests exercise), which would cost proportionally more posture requests.
PRISM_PAGE_ROWS = 300


@contextmanager
def simulator_process(devices: int, *, rate_limit_per_second: int | None = None, latency: float = 0.0,
                      rate_limit_per_hour: int = 1_000_000, seed: int = 1):
    """The simulator in a separate process, so it shares neither the GIL nor the memory figure."""
    command = [sys.executable, "-m", "simulator", "--devices", str(devices), "--token", TOKEN,
               "--seed", str(seed), "--latency", str(latency), "--rate-limit-per-hour", str(rate_limit_per_hour),
               "--prism-page-rows", str(PRISM_PAGE_ROWS)]
    if rate_limit_per_second:
        command += ["--rate-limit-per-second", str(rate_limit_per_second)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/api/v1/)", line)
        if not match:
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)


def collector(api_url: str, store, *, requests_per_second: float = 45.0, max_workers: int = 16,
              budget: int | None = None, apps_source: str = "per-device", clock=SystemClock) -> CollectorRun:
    """The collector as every caller builds it (collect.runtime.build_collector), against the simulator."""
    credentials = parse_secret(TOKEN, fallback_url=api_url, allow_insecure_localhost=True)
    options = CollectorSettings(requests_per_second=requests_per_second, max_workers=max_workers,
                               request_budget=budget, apps_source=apps_source)
    return build_collector(credentials, store, options, clock=clock)


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, unlike ru_maxrss, is not inherited across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class HourlyClock(SystemClock):
    """Runs an hour apart, as the schedule would have them, without waiting an hour: real pacing and
    waits, but the wall clock (snapshot ids, fetched_at) starts at `start`."""

    def __init__(self, start: datetime):
        self.base, self.real_start = start, datetime.now(timezone.utc)

    def now(self) -> datetime:
        return self.base + (datetime.now(timezone.utc) - self.real_start)


class Timer:
    """Wall time (`seconds`) and this process's CPU time (`cpu_seconds`): on a shared machine the wall
    time follows the load, the CPU time much less."""

    def __enter__(self):
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        self.cpu_seconds = time.process_time() - self.cpu_started
