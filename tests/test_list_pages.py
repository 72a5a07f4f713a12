"""The page counts `check` prices a run with are the counts the collector's client really sends.

The client pages the device list in pages of 300 that overlap by one device and stops at a page shorter
than the full ones (or just the overlap); it pages each Prism posture category until its `total`, however
short Prism's pages are. Both estimates are pinned against what the simulator is asked, the posture one
through a whole collector run.
"""

from __future__ import annotations

import pytest
from kandji_fakes import simulator_client

from kandji_snapshots.cli.check import ApiProbe
from kandji_snapshots.cli.cost import cost_lines, posture_requests
from kandji_snapshots.cli.posture_check import CategoryProbe, probe_posture
from kandji_snapshots.cli.tenant_check import probe_tenant_sources
from kandji_snapshots.collect.posture import POSTURE_CATEGORIES
from kandji_snapshots.collect.runtime import build_collector
from kandji_snapshots.kandji.config import parse_secret
from kandji_snapshots.kandji.paging import DeviceListPaginator, PrismPaginator
from kandji_snapshots.settings import CollectorSettings
from kandji_snapshots.snapshots.storage import MemoryObjectStore
from simulator import Fleet, KandjiSimulator

TOKEN = "kst-list-pages-7f3a9c"


@pytest.mark.parametrize("devices", [0, 1, 299, 300, 301, 599, 600])
def test_the_estimated_list_requests_are_those_the_client_sends(devices):
    fleet = Fleet.generate(devices, seed=3, apps_per_device=(0, 1))
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        client = simulator_client(sim, TOKEN)
        listed = client.list_devices()
        sent = sim.stats.by_endpoint["devices"]
    assert len(listed) == devices
    assert sent == client.stats.requests
    assert DeviceListPaginator.requests_for(devices) == sent


def test_the_run_cost_counts_the_list_requests():
    assert "2 x 599 devices for details and apps + 3 list pages" in "\n".join(cost_lines(599, None, None, None, 45))


# --- the Prism posture categories --------------------------------------------------------------------

@pytest.mark.parametrize("devices, page_rows", [(0, 300), (250, 300), (650, 300), (650, 100), (301, 25)])
def test_the_estimated_prism_requests_are_those_the_client_sends(devices, page_rows):
    fleet = Fleet.generate(devices, seed=5, apps_per_device=(0, 1))
    with KandjiSimulator(fleet, token=TOKEN, prism_page_rows=page_rows) as sim:
        client = simulator_client(sim, TOKEN)
        rows = len(list(client.iter_prism_category("device_information")))
        sent = sim.stats.by_endpoint["prism_device_information"]
    assert rows == devices
    assert PrismPaginator.requests_for(rows, page_rows) == sent


@pytest.mark.parametrize("page_rows, permissions", [
    (300, None),
    (25, None),
    (300, {"devices", "details", "apps", "prism_device_information", "prism_filevault"}),
])
def test_the_run_cost_is_what_a_collector_run_spends(page_rows, permissions):
    """`check`'s probe, then a whole collector run: its posture requests and its total (tenant sources included)
    are the estimate's."""
    fleet = Fleet.generate(320, seed=6, apps_per_device=(0, 1))  # two list pages, two Prism pages of 300
    with KandjiSimulator(fleet, token=TOKEN, prism_page_rows=page_rows, permissions=permissions) as sim:
        credentials = parse_secret(TOKEN, fallback_url=sim.api_url, allow_insecure_localhost=True)
        api_probe = ApiProbe(simulator_client(sim, TOKEN))
        probe = probe_posture(api_probe.get)
        tenant = probe_tenant_sources(api_probe.get, api_probe.host)
        sim.stats.reset()
        run = build_collector(credentials, MemoryObjectStore(),
                              CollectorSettings(requests_per_second=1000, request_budget=None))
        manifest = run.collector.collect()
        spent = sim.stats.by_endpoint
        posture_spent = sum(spent[f"prism_{category}"] for category in POSTURE_CATEGORIES)
        total_spent = sim.stats.requests
    assert manifest.document["refreshed_devices"] == len(fleet)  # a full run: nothing carried
    assert posture_requests(len(fleet), probe, page_rows) == posture_spent
    lines = "\n".join(cost_lines(len(fleet), None, None, None, 45, probe, tenant))
    if page_rows == 300:  # the figure every line is counted at
        assert f"{total_spent:,} requests (2 x 320 devices for details and apps + 2 list pages + " in lines
    else:  # the figure for short pages, named beside it
        assert f"at 25 rows a page it costs {posture_spent:,}" in lines


def test_a_category_the_token_may_not_read_costs_its_one_refused_request():
    probe = {"device_information": CategoryProbe("present", rows=650), "filevault": CategoryProbe("present", rows=0),
             "startup_settings": CategoryProbe("missing", "403"), "activation_lock": CategoryProbe("absent", "400"),
             "application_firewall": CategoryProbe("unknown"), "gatekeeper_and_xprotect": CategoryProbe("present")}
    # 3 + 1 (an empty table is one page) + 1 + 1 + 3 and 3 (no count: one row per device), and a page
    # proving the end of each of the three tables with rows
    assert posture_requests(650, probe) == 15
    # At 25 rows a page overlapping by two: 1 + ceil((650 - 25) / 23) = 29 for 650 rows.
    assert posture_requests(650, probe, 25) == 30 + 1 + 1 + 1 + 30 + 30
    # not probed: all six, one row per device, each with the page proving its end
    assert posture_requests(650, None) == 24
