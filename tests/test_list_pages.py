"""The page count `check` prices a run with is the count the collector's client really sends.

The client pages the device list in pages of 300 that overlap by one device and stops at a page shorter
than the full ones (or just the overlap): the estimate is pinned against what the simulator is asked.
"""

from __future__ import annotations

import pytest

from kandji_snapshots.cli.cost import cost_lines
from kandji_snapshots.kandji.client import KandjiClient, device_list_requests
from kandji_snapshots.kandji.config import parse_secret
from kandji_snapshots.kandji.rate_limiter import RateLimiter
from simulator import Fleet, KandjiSimulator

TOKEN = "kst-list-pages-7f3a9c"


@pytest.mark.parametrize("devices", [0, 1, 299, 300, 301, 599, 600])
def test_the_estimated_list_requests_are_those_the_client_sends(devices):
    fleet = Fleet.generate(devices, seed=3, apps_per_device=(0, 1))
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        credentials = parse_secret(TOKEN, fallback_url=sim.api_url, allow_insecure_localhost=True)
        client = KandjiClient(credentials, limiter=RateLimiter(1000))
        listed = client.list_devices()
        sent = sim.stats.by_endpoint["devices"]
    assert len(listed) == devices
    assert sent == client.stats.requests
    assert device_list_requests(devices) == sent


def test_the_run_cost_counts_the_list_requests():
    assert "2 x 599 devices for details and apps + 3 list pages" in "\n".join(cost_lines(599, None, None, None, 45))
