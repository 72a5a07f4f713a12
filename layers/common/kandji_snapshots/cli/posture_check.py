"""`check`, posture part: which Prism posture categories the token may read (each one optional).

A category the token may not read is skipped by every run (its columns stay null in
device_posture), so `check` names it with the permission to add, but it never makes the
token "not ready".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kandji_snapshots.collect.posture import POSTURE_CATEGORIES, prism_permission


def probe_posture(get: Callable[..., Any]) -> dict[str, tuple[str, str]]:
    """category -> (state, note), from one `GET /prism/<category>?limit=1` each (`get` is ApiProbe.get)."""
    results = {}
    for category in POSTURE_CATEGORIES:
        answer = get(f"prism/{category}", {"limit": 1})
        if answer.status == 200:
            results[category] = ("present", "")
        elif answer.status in (401, 403):  # the API uses both for a missing permission
            results[category] = ("missing", f"{answer.status}: runs skip this category")
        elif answer.status in (400, 404):
            results[category] = ("absent", f"{answer.status}: this tenant does not offer it")
        else:
            results[category] = ("unknown", answer.problem or f"answered {answer.status}; try again later")
    return results


def posture_lines(results: dict[str, tuple[str, str]], token_settings: str) -> list[str]:
    lines = ["posture (optional: Prism categories read every run for every device)"]
    for category, (state, note) in results.items():
        lines.append(f"  {state:<9} {prism_permission(category)}{': ' + note if note else ''}")
    missing = [prism_permission(category) for category, (state, _) in results.items() if state == "missing"]
    if missing:
        lines.append(f"  to read them, add {', '.join(missing)} in {token_settings}")
    return lines
