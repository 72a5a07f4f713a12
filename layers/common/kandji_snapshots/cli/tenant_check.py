"""`check`, tenant part: which tenant-wide sources the token may read (each one optional) and what they
cost a run. A source the token may not read is skipped by every run (named in the manifest), so `check`
names it with the permission to add, but it never makes the token "not ready".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from kandji_snapshots.collect.audit import AUDIT_PAGE_LIMIT
from kandji_snapshots.collect.tenant_sources import SNAPSHOT_SOURCES, SnapshotSource
from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.kandji.paging import NextUrlPaginator
from kandji_snapshots.kandji.permissions import permission_for

MAX_PROBE_PAGES = 20  # pages `check` reads of a list without a count before it prices it at one row per device


class SourceProbe(NamedTuple):
    state: str  # present, missing, absent, unknown
    note: str = ""
    rows: int | None = None  # the count its envelope announced, when it announces one


def _announced(body: Any) -> int | None:
    if not isinstance(body, dict):
        return None
    for name in ("count", "total"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def probe_tenant_sources(get: Callable[..., Any], host: str) -> dict[str, SourceProbe]:
    """source -> what its first pages said (`get` is ApiProbe.get). A list whose envelope announces no count is
    paged (its own way, up to MAX_PROBE_PAGES) to count its rows, so the cost estimate is the run's."""
    results = {"audit_events": _probe_one(get("audit/events", {"limit": 1}, endpoint="audit_events"))}
    for source in SNAPSHOT_SOURCES:
        paginator = source.paginator(host)
        answer = get(source.path, paginator.next_request(), endpoint=source.endpoint)
        probe = _probe_one(answer)
        pages = 1
        rows = 0
        while probe.state == "present" and probe.rows is None and answer.status == 200:
            try:
                rows += len(paginator.update(answer.body))
            except KandjiSnapshotsError:
                break  # counted at one row per device
            params = paginator.next_request()
            if params is None:
                probe = SourceProbe("present", "", rows)
                break
            if pages >= MAX_PROBE_PAGES:
                break
            answer, pages = get(source.path, params, endpoint=source.endpoint), pages + 1
        results[source.name] = probe
    return results


def _probe_one(answer: Any) -> SourceProbe:
    if answer.status == 200:
        return SourceProbe("present", "", _announced(answer.body))
    if answer.status in (401, 403):  # the API uses both for a missing permission
        return SourceProbe("missing", f"{answer.status}: runs skip this source")
    if answer.status == 404:
        return SourceProbe("absent", "404: this tenant does not serve it")
    return SourceProbe("unknown", answer.problem or f"answered {answer.status}; try again later")


def _endpoint(name: str) -> str:
    return next((source.endpoint for source in SNAPSHOT_SOURCES if source.name == name), name)


def source_requests(name: str, probe: SourceProbe, devices: int) -> int:
    """What a run spends on one source: a refused source costs its one refused request; the audit trail
    one page per 500 new events (an hourly run: one); a list without a count is counted at one row per device."""
    if probe.state in ("missing", "absent"):
        return 1
    if name == "audit_events":
        return NextUrlPaginator.requests_for(1, AUDIT_PAGE_LIMIT)
    source: SnapshotSource = next(source for source in SNAPSHOT_SOURCES if source.name == name)
    return source.requests_for(devices if probe.rows is None else probe.rows)


def tenant_requests(devices: int, probes: dict[str, SourceProbe]) -> int:
    """Every tenant source of a run, as probed."""
    return sum(source_requests(name, probe, devices) for name, probe in probes.items())


def tenant_lines(results: dict[str, SourceProbe], devices: int | None, token_settings: str) -> list[str]:
    lines = ["tenant sources (optional: read every run, before per-device details)"]
    for name, probe in results.items():
        cost = "" if devices is None else f", about {source_requests(name, probe, devices):,} request(s) a run"
        rows = "" if probe.rows is None else f", {probe.rows:,} rows"
        lines.append(f"  {probe.state:<9} {permission_for(_endpoint(name))}{rows}{cost}"
                     f"{': ' + probe.note if probe.note else ''}")
    missing = [permission_for(_endpoint(name)) for name, probe in results.items() if probe.state == "missing"]
    if missing:
        lines.append(f"  to read them, add {', '.join(missing)} in {token_settings}")
    return lines
