"""What a full collector run costs in requests, against the tenant's hourly limit and the collector's
default budget (printed by `check`).

A run spends, in this order: the device list, the Prism posture categories (every run, before anything
else), then details and apps per device with what is left (rolling refresh when that is not enough).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from kandji_snapshots.cli.posture_check import CategoryProbe
from kandji_snapshots.cli.progress import format_duration
from kandji_snapshots.cli.rate_limit import DOCUMENTED_HOURLY_LIMIT
from kandji_snapshots.cli.tenant_check import SourceProbe, tenant_requests
from kandji_snapshots.collect.posture import POSTURE_CATEGORIES
from kandji_snapshots.kandji.paging import PAGE_LIMIT, PRISM_OVERLAP, DeviceListPaginator, PrismPaginator
from kandji_snapshots.settings import DEFAULT_HOURLY_RESERVE, DEFAULT_REQUEST_BUDGET

# The shortest Prism page seen from a real tenant (/work/shared/kandji-api.md, "Prism paging"): pages can
# be shorter than PAGE_LIMIT and only Prism knows by how much, so the estimate names both page sizes.
SHORT_PRISM_PAGE = 25


def posture_requests(devices: int, posture: Mapping[str, CategoryProbe] | None,
                     page_rows: int = PAGE_LIMIT) -> int:
    """What a run spends on the posture categories when Prism serves `page_rows` rows a page.

    A category is paged through its rows (the `total` `check` saw, else one row per device); one the token
    may not read, or the tenant does not offer, costs the single request that is refused.
    """
    probes = posture or {category: CategoryProbe("unknown") for category in POSTURE_CATEGORIES}
    spent = 0
    for probe in probes.values():
        if probe.state in ("missing", "absent"):
            spent += 1
        else:
            spent += PrismPaginator.requests_for(devices if probe.rows is None else probe.rows, page_rows)
    return spent


def full_run_requests(devices: int, posture: Mapping[str, CategoryProbe] | None = None,
                      tenant: Mapping[str, SourceProbe] | None = None) -> int:
    """A run that refreshes every device: the list, posture and the tenant sources (None: not probed, not
    counted), then details and apps per device."""
    return (DeviceListPaginator.requests_for(devices) + posture_requests(devices, posture)
            + (tenant_requests(devices, dict(tenant)) if tenant is not None else 0) + 2 * devices)


def cost_lines(devices: int | None, app_rows: int | None, limit_hour: int | None, remaining_hour: int | None,
               requests_per_second: float, posture: Mapping[str, CategoryProbe] | None = None,
               tenant: Mapping[str, SourceProbe] | None = None) -> list[str]:
    """What a full run would cost in requests, against the hourly limit and the collector's default budget.

    `posture`: what `check` learnt of each Prism posture category (None: not probed, all six assumed
    readable with one row per device)."""
    if devices is None:
        return [f"{'full run':<12}unknown until the devices can be counted"]
    pages = DeviceListPaginator.requests_for(devices)
    prism_posture = posture_requests(devices, posture)
    tenant_sources = tenant_requests(devices, dict(tenant)) if tenant is not None else 0
    total = full_run_requests(devices, posture, tenant)
    first = total - 2 * devices  # the list, posture and tenant sources: spent before any device is refreshed
    limit = limit_hour or DOCUMENTED_HOURLY_LIMIT
    usable = max(0, min(DEFAULT_REQUEST_BUDGET, limit - DEFAULT_HOURLY_RESERVE))
    categories = len(posture) if posture is not None else len(POSTURE_CATEGORIES)
    lines = [f"{'full run':<12}{total:,} requests (2 x {devices:,} devices for details and apps "
             f"+ {pages:,} list page{'s' if pages != 1 else ''} + {prism_posture:,} for {categories} Prism posture "
             f"categories{f' + {tenant_sources:,} for the tenant sources' if tenant is not None else ''}), "
             f"about {format_duration(total / requests_per_second)} at {requests_per_second:g} "
             "requests/s",
             f"{'':<12}posture counted at Prism's full pages of {PAGE_LIMIT} rows; Prism may serve shorter ones "
             f"(a real tenant served {SHORT_PRISM_PAGE}), and at {SHORT_PRISM_PAGE} rows a page it costs "
             f"{posture_requests(devices, posture, SHORT_PRISM_PAGE):,}"]
    limit_text = f"{limit:,}/hour" + ("" if limit_hour else " (documented)")
    if total <= usable:
        lines.append(f"{'':<12}fits in one run: the collector may spend {usable:,} per run (budget "
                     f"{DEFAULT_REQUEST_BUDGET:,}, leaving {DEFAULT_HOURLY_RESERVE:,} of the tenant's {limit_text} "
                     "for other integrations)")
    else:
        for_devices = usable - first  # the list and posture come first, every run
        runs = math.ceil(2 * devices / for_devices) if for_devices > 0 else None
        every = (f"every device is refreshed about every {runs} runs" if runs
                 else "no device can be refreshed: the list and posture take it all")
        lines.append(f"{'':<12}more than one run may spend ({usable:,}: budget {DEFAULT_REQUEST_BUDGET:,}, leaving "
                     f"{DEFAULT_HOURLY_RESERVE:,} of the tenant's {limit_text}): after the list and posture "
                     f"({first:,}) each run refreshes the devices that most need it (rolling refresh) and {every}")
    if remaining_hour is not None and remaining_hour - DEFAULT_HOURLY_RESERVE < min(total, usable):
        affordable = max(0, remaining_hour - DEFAULT_HOURLY_RESERVE - first) // 2
        lines.append(f"{'':<12}right now only {remaining_hour:,} are left this hour: a run now would refresh "
                     f"about {affordable:,} devices and carry the others forward")
    if app_rows is not None:
        prism = devices + first + PrismPaginator.requests_for(app_rows)
        lines.append(f"{'':<12}{prism:,} requests with --apps-source prism (KANDJI_APPS_SOURCE=prism): details "
                     f"per device, {app_rows:,} app rows fleet-wide in pages of {PAGE_LIMIT} overlapping by "
                     f"{PRISM_OVERLAP}")
    return lines
