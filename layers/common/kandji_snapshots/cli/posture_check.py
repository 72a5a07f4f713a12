"""`check`, posture part: which Prism posture categories the token may read (each one optional).

A category the token may not read is skipped by every run (its columns stay null in
device_posture), so `check` names it with the permission to add, but it never makes the
token "not ready".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from kandji_snapshots.collect.posture import POSTURE_CATEGORIES
from kandji_snapshots.kandji.paging import prism_total
from kandji_snapshots.kandji.permissions import prism_permission


class CategoryProbe(NamedTuple):
    state: str  # present, missing, absent, unknown
    note: str = ""
    rows: int | None = None  # the `total` its envelope announced: what a run pages through


def probe_posture(get: Callable[..., Any]) -> dict[str, CategoryProbe]:
    """category -> what one `GET /prism/<category>?limit=1` said (`get` is ApiProbe.get)."""
    results = {}
    for category in POSTURE_CATEGORIES:
        answer = get(f"prism/{category}", {"limit": 1})
        if answer.status == 200:
            total = prism_total(answer.body)
            rows = total if total is not None and total >= 0 else None
            results[category] = CategoryProbe("present", "", rows)
        elif answer.status in (401, 403):  # the API uses both for a missing permission
            results[category] = CategoryProbe("missing", f"{answer.status}: runs skip this category")
        elif answer.status in (400, 404):
            results[category] = CategoryProbe("absent", f"{answer.status}: this tenant does not offer it")
        else:
            results[category] = CategoryProbe("unknown", answer.problem or f"answered {answer.status}; try again later")
    return results


def posture_lines(results: dict[str, CategoryProbe], token_settings: str) -> list[str]:
    lines = ["posture (optional: Prism categories read every run for every device)"]
    for category, probe in results.items():
        lines.append(f"  {probe.state:<9} {prism_permission(category)}{': ' + probe.note if probe.note else ''}")
    missing = [prism_permission(category) for category, probe in results.items() if probe.state == "missing"]
    if missing:
        lines.append(f"  to read them, add {', '.join(missing)} in {token_settings}")
    return lines
