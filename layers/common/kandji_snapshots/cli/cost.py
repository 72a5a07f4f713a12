"""What a full collector run costs in requests, against the tenant's hourly limit and the collector's
default budget (printed by `check`)."""

from __future__ import annotations

import math

from kandji_snapshots.cli.rate_limit import DOCUMENTED_HOURLY_LIMIT
from kandji_snapshots.kandji.client import PAGE_LIMIT, PRISM_OVERLAP, device_list_requests, prism_table_requests
from kandji_snapshots.cli.progress import format_duration
from kandji_snapshots.settings import DEFAULT_HOURLY_RESERVE, DEFAULT_REQUEST_BUDGET


def cost_lines(devices: int | None, app_rows: int | None, limit_hour: int | None, remaining_hour: int | None,
               requests_per_second: float) -> list[str]:
    """What a full run would cost in requests, against the hourly limit and the collector's default budget."""
    if devices is None:
        return [f"{'full run':<12}unknown until the devices can be counted"]
    pages = device_list_requests(devices)
    per_device = 2 * devices + pages
    limit = limit_hour or DOCUMENTED_HOURLY_LIMIT
    usable = max(0, min(DEFAULT_REQUEST_BUDGET, limit - DEFAULT_HOURLY_RESERVE))
    lines = [f"{'full run':<12}{per_device:,} requests per-device (2 x {devices:,} devices for details and apps "
             f"+ {pages:,} list page{'s' if pages != 1 else ''}), about "
             f"{format_duration(per_device / requests_per_second)} at {requests_per_second:g} requests/s"]
    limit_text = f"{limit:,}/hour" + ("" if limit_hour else " (documented)")
    if per_device <= usable:
        lines.append(f"{'':<12}fits in one run: the collector may spend {usable:,} per run (budget "
                     f"{DEFAULT_REQUEST_BUDGET:,}, leaving {DEFAULT_HOURLY_RESERVE:,} of the tenant's {limit_text} "
                     "for other integrations)")
    else:
        runs = math.ceil(per_device / usable) if usable else None
        every = f"every device is refreshed about every {runs} runs" if runs else "no device can be refreshed"
        lines.append(f"{'':<12}more than one run may spend ({usable:,}: budget {DEFAULT_REQUEST_BUDGET:,}, leaving "
                     f"{DEFAULT_HOURLY_RESERVE:,} of the tenant's {limit_text}): each run refreshes the devices "
                     f"that most need it (rolling refresh) and {every}")
    if remaining_hour is not None and remaining_hour - DEFAULT_HOURLY_RESERVE < min(per_device, usable):
        affordable = max(0, remaining_hour - DEFAULT_HOURLY_RESERVE - pages) // 2
        lines.append(f"{'':<12}right now only {remaining_hour:,} are left this hour: a run now would refresh "
                     f"about {affordable:,} devices and carry the others forward")
    if app_rows is not None:
        prism = devices + pages + prism_table_requests(app_rows)
        lines.append(f"{'':<12}{prism:,} requests with --apps-source prism (KANDJI_APPS_SOURCE=prism): details "
                     f"per device, {app_rows:,} app rows fleet-wide in pages of {PAGE_LIMIT} overlapping by "
                     f"{PRISM_OVERLAP}")
    return lines
