"""The tenant-wide sources of a run: threats, vulnerabilities, users, blueprints and the audit trail.

Read after the device list and posture, before per-device details (so the budget's plan for details
counts them). Each source is optional: a token without its permission (403, or 401 used loosely), a
source the tenant does not serve (404), a read that fails or a spent budget skips that source, named in
the manifest (`tenant.sources.<name>`) and the logs, and never fails the run. A source is used whole or not
at all: the parts of a read that broke off are deleted, and a table that was not read is unknown in this
snapshot (the differ compares it with nothing, so a change it hid is reported when it is read again).

The snapshot tables hold every row again each run (partitioned by the snapshot's day); the audit trail is
stored once per event (collect/audit.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from kandji_snapshots.collect.audit import (
    AuditRead,
    AuditSettings,
    AuditState,
    AuditTrail,
    AuditTrailBlocked,
    audit_section,
)
from kandji_snapshots.collect.refresh import BudgetExhausted
from kandji_snapshots.errors import ConfigurationError, KandjiApiError, KandjiAuthError
from kandji_snapshots.kandji.paging import NextUrlPaginator, PageNumberPaginator, Paginator
from kandji_snapshots.kandji.permissions import permission_for
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.layout import audit_claim_key
from kandji_snapshots.snapshots.normalize import encode_row, source_row
from kandji_snapshots.snapshots.schema import Type
from kandji_snapshots.snapshots.storage import ObjectStore
from kandji_snapshots.snapshots.table_io import TableWriter
from kandji_snapshots.snapshots.tenant_schema import (
    AUDIT_EVENTS,
    BLUEPRINTS,
    ROW_IDENTITY,
    THREATS,
    USERS,
    VULNERABILITIES,
    VULNERABILITY_DETECTIONS,
)
from kandji_snapshots.snapshots.timeutil import normalize_timestamp

logger = logging.getLogger(__name__)

READ, FORBIDDEN, UNAVAILABLE, FAILED, NO_BUDGET, BUSY, SUPERSEDED = (
    "read", "forbidden", "unavailable", "failed", "no_budget", "busy", "superseded")


class TenantApi(Protocol):
    host: str

    def read_list(self, endpoint: str, path: str, paginator: Paginator) -> Iterator[dict[str, Any]]: ...

    def audit_events(self, start_date: str) -> Iterator[dict[str, Any]]: ...


def _without_enrollment_code(blueprint: dict[str, Any]) -> dict[str, Any]:
    """The enrolment code enrols devices into the blueprint: a credential, never stored (only `is_active`)."""
    code = blueprint.get("enrollment_code")
    return {**blueprint, "enrollment_code": {"is_active": code.get("is_active")} if isinstance(code, dict) else None}


@dataclass(frozen=True)
class SnapshotSource:
    """One tenant-wide list read whole each run into the table `name`."""

    name: str
    endpoint: str  # the permission key (kandji/permissions.py) and the request counter's name
    path: str
    columns: dict[str, Type]
    key: tuple[str, ...]  # what a row is about (tenant_schema.ROW_IDENTITY)
    page_rows: int  # rows a page holds, for the cost estimate
    paginator: Callable[[str], Paginator]  # host -> a fresh paginator
    sanitize: Callable[[dict[str, Any]], dict[str, Any]] = lambda row: row

    def requests_for(self, rows: int) -> int:
        if self.name == "vulnerabilities":
            return PageNumberPaginator.requests_for(rows, self.page_rows)
        return NextUrlPaginator.requests_for(rows, self.page_rows)


SNAPSHOT_SOURCES: tuple[SnapshotSource, ...] = (
    SnapshotSource("threats", "threats", "threat-details", THREATS, ROW_IDENTITY["threats"], 300,
                   lambda host: NextUrlPaginator("threats", "threat-details", host, {"limit": 300, "offset": 0})),
    SnapshotSource("vulnerability_detections", "detections", "vulnerability-management/detections",
                   VULNERABILITY_DETECTIONS, ROW_IDENTITY["vulnerability_detections"], 300,
                   lambda host: NextUrlPaginator("detections", "vulnerability-management/detections", host,
                                                 {"size": 300})),
    SnapshotSource("vulnerabilities", "vulnerabilities", "vulnerability-management/vulnerabilities",
                   VULNERABILITIES, ROW_IDENTITY["vulnerabilities"], 50,
                   lambda host: PageNumberPaginator("vulnerabilities", "vulnerability-management/vulnerabilities",
                                                    50)),
    SnapshotSource("users", "users", "users", USERS, ROW_IDENTITY["users"], 100,
                   lambda host: NextUrlPaginator("users", "users", host)),
    SnapshotSource("blueprints", "blueprints", "blueprints", BLUEPRINTS, ROW_IDENTITY["blueprints"], 300,
                   lambda host: NextUrlPaginator("blueprints", "blueprints", host, {"limit": 300, "offset": 0}),
                   _without_enrollment_code),
)
AUDIT_ENDPOINT = "audit_events"
SOURCE_NAMES = ("audit_events", *(source.name for source in SNAPSHOT_SOURCES))


def sources_setting(text: str) -> tuple[str, ...]:
    """KANDJI_TENANT_SOURCES: `all`, `none`, or names of SOURCE_NAMES separated by commas."""
    text = text.strip().lower()
    if text in ("", "all"):
        return SOURCE_NAMES
    if text == "none":
        return ()
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SOURCE_NAMES]
    if unknown:
        raise ConfigurationError(f"KANDJI_TENANT_SOURCES names {', '.join(unknown)}: expected all, none or some of "
                                 f"{', '.join(SOURCE_NAMES)}.")
    return names


@dataclass
class SourceRead:
    """What one source gave this run: the manifest's `tenant.sources.<name>`."""

    status: str = READ
    rows: int = 0
    requests: int = 0
    permission: str | None = None  # the missing permission, when forbidden
    error: str | None = None


@dataclass
class TenantRun:
    """The tenant tables written this run, not committed until the collector's manifest is."""

    sources: dict[str, SourceRead] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    audit: AuditRead | None = None
    audit_carried: dict[str, Any] | None = None  # the committed state, when this run stores no events
    keys: list[str] = field(default_factory=list)

    def section(self) -> dict[str, Any]:
        """The manifest's `tenant` section."""
        if self.audit is not None and self.sources["audit_events"].status == READ:
            audit = {"state": self.audit.state.to_document(), "base": self.audit.base.snapshot_id,
                     "served": self.audit.served, "stored": len(self.audit.events), "repeats": self.audit.repeats,
                     "too_late": self.audit.too_late, "unplaceable": self.audit.unplaceable}
        else:
            audit = {"state": self.audit_carried}
        return {
            "sources": {name: {key: value for key, value in asdict(read).items() if value is not None}
                        for name, read in self.sources.items()},
            "missing_permissions": [read.permission for read in self.sources.values()
                                    if read.status == FORBIDDEN and read.permission],
            "tables": self.tables,
            "audit": audit,
        }


class TenantReader:
    def __init__(self, api: TenantApi, store: ObjectStore, *, clock: Callable[[], datetime],
                 requests_spent: Callable[[str], int] = lambda endpoint: 0,
                 audit: AuditSettings = AuditSettings(), sources: tuple[str, ...] = SOURCE_NAMES):
        self._api = api
        self._store = store
        self._clock = clock
        self._spent = requests_spent
        self._trail = AuditTrail(api, store, settings=audit, clock=clock)
        self._wanted = frozenset(sources)

    def read(self, snapshot_id: str, previous: Manifest | None) -> TenantRun:
        run = TenantRun()
        section = audit_section(previous)
        run.audit_carried = section.get("state") if section else None
        out_of_budget = False
        if AUDIT_ENDPOINT in self._wanted:
            out_of_budget = self._read_audit(run, snapshot_id, previous)
        for source in SNAPSHOT_SOURCES:
            if source.name not in self._wanted:
                continue
            if out_of_budget:
                run.sources[source.name] = SourceRead(NO_BUDGET, error="the run's request budget was spent")
                continue
            spent_before = self._spent(source.endpoint)
            writer = TableWriter(self._store, source.name, snapshot_id)
            read = self._guarded(source.endpoint, lambda: self._write_source(source, snapshot_id, writer))
            read.requests = self._spent(source.endpoint) - spent_before
            if read.status == READ:
                run.tables[source.name] = writer.close()
                run.keys.extend(writer.keys)
            else:
                self._delete(writer.abort())
            out_of_budget = read.status == NO_BUDGET
            run.sources[source.name] = read
            _log(source.name, read)
        return run

    def _write_source(self, source: SnapshotSource, snapshot_id: str, writer: TableWriter) -> SourceRead:
        rows = [source_row(source.sanitize(raw), source.columns, snapshot_id)
                for raw in self._api.read_list(source.endpoint, source.path, source.paginator(self._api.host))]
        rows.sort(key=lambda row: tuple(str(row.get(name) or "") for name in source.key))
        for row in rows:
            writer.write_line(encode_row(row), "")  # one ordering: by the source's key, sorted above
        return SourceRead(READ, rows=len(rows))

    def _read_audit(self, run: TenantRun, snapshot_id: str, previous: Manifest | None) -> bool:
        spent_before = self._spent(AUDIT_ENDPOINT)
        try:
            committed = self._trail.committed_state(previous)
        except AuditTrailBlocked as error:  # the devices and the other sources are read all the same
            read = SourceRead(FAILED, error=str(error))
        else:
            if committed is None:
                read = SourceRead(BUSY, error="another run is committing the audit trail from the same point right now")
            else:
                base, attempt = committed
                run.audit_carried = base.to_document()
                read = self._guarded(AUDIT_ENDPOINT, lambda: self._write_audit(base, attempt, snapshot_id, run))
        read.requests = self._spent(AUDIT_ENDPOINT) - spent_before
        run.sources[AUDIT_ENDPOINT] = read
        _log(AUDIT_ENDPOINT, read)
        return read.status == NO_BUDGET

    def _write_audit(self, base: AuditState, attempt: int, snapshot_id: str, run: TenantRun) -> SourceRead:
        """Read the trail from `base` and write the events to keep; `run.audit` is set once they are written."""
        audit = self._trail.read(base, attempt, snapshot_id)
        by_day: dict[str, TableWriter] = {}
        try:
            for event in audit.events:
                day = (normalize_timestamp(event.get("occurred_at")) or "")[:10]
                writer = by_day.get(day) or by_day.setdefault(day, TableWriter(self._store, "audit_events",
                                                                               snapshot_id, day=day))
                writer.write_line(encode_row(source_row(event, AUDIT_EVENTS, snapshot_id)), "")
        except BaseException:
            self._delete([key for writer in by_day.values() for key in writer.abort()])
            raise
        closed = [writer.close() for _, writer in sorted(by_day.items())]
        table = {"rows": sum(part["rows"] for part in closed), "keys": [key for part in closed for key in part["keys"]]}
        run.tables["audit_events"] = table
        run.keys.extend(table["keys"])
        run.audit = audit
        return SourceRead(READ, rows=table["rows"])

    def _guarded(self, endpoint: str, read: Callable[[], SourceRead]) -> SourceRead:
        try:
            return read()
        except KandjiAuthError as error:
            return SourceRead(FORBIDDEN, permission=permission_for(endpoint),
                              error=f"{error.status}: the token may not read it")
        except BudgetExhausted as error:
            return SourceRead(NO_BUDGET, error=str(error))
        except KandjiApiError as error:
            if error.status == 404:
                return SourceRead(UNAVAILABLE, error="404: not served on this tenant")
            return SourceRead(FAILED, error=str(error))

    def commit(self, run: TenantRun, snapshot_id: str) -> None:
        """Just before the manifest: claim the audit trail's continuation; a run that lost drops its events."""
        if run.audit is None:
            return
        if self._trail.claim(run.audit, snapshot_id):
            run.keys.append(audit_claim_key(run.audit.base.snapshot_id, run.audit.claim_attempt))  # ours: undone
            return
        logger.warning("another run continued the audit trail from the same point first: this run's events are dropped",
                       extra={"base": run.audit.base.snapshot_id})
        self._delete(run.tables.pop("audit_events", {}).get("keys", []))
        run.sources[AUDIT_ENDPOINT] = SourceRead(SUPERSEDED, error="another run continued the audit trail first")
        run.audit_carried = run.audit.base.to_document()
        run.audit = None

    def discard(self, run: TenantRun | None) -> None:
        """The run will not commit: its parts, and its audit claim once made, go (the next run reads again)."""
        if run is not None:
            self._delete(run.keys)

    def _delete(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            self._store.delete(keys)
        except Exception:  # orphans without a manifest are never read
            logger.warning("could not delete the parts of a tenant source not kept", extra={"keys": len(keys)})


def _log(name: str, read: SourceRead) -> None:
    log = logger.info if read.status == READ else logger.warning
    log("tenant source " + ("read" if read.status == READ else "skipped"),
        extra={"source": name, **{key: value for key, value in asdict(read).items() if value is not None}})
