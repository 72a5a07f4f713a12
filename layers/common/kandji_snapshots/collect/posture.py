"""Every device's security posture, every run, from Prism's fleet-wide category tables.

A Prism category costs about one request per 300 devices, where per-device details cost one per
device, and SIP, secure boot, the firewall and Gatekeeper exist only in Prism. So the
collector reads these categories right after the device list, before planning details and
apps with what is left of the budget.

Each category is optional: a token without its permission (403, or 401 used loosely), a
tenant that does not know it (400 "Invalid category", 404) or a category that cannot be read
completely is skipped, named in the manifest and the logs, and never fails the run. A
category is used whole or not at all: rows of a read that broke off are dropped.

What was not read is unknown, not empty, and keeps what the last read said: a category skipped
this run, a device the category has no row for, or a FileVault/firewall row without its status
carries the device's value from the previous snapshot (which may itself have carried it), and the
row's `carried_from.<category>` says as of when that value was known: the end of the run that read
it (details fetched later are newer, details fetched in that run are not). So the differ compares each
category with the last snapshot that read it: a firewall turned off while the category failed is
published by the run that reads it again, and a Mac missing from the rows is not "turned off".

Row shapes (confirmed from integrations that read them: firezone/firezone
elixir/lib/portal/iru/sync.ex, MScottBlake/terraform-provider-iru internal/provider/
data_source_prism_*.go): every row carries the device (`device_id`, `device__name`,
`device__family`, `device__user_*`, `serial_number`, `blueprint_*`, `asset_tag`, `tags`) and
`last_collected_at`, then the category's own columns (schema.POSTURE_CATEGORY_COLUMNS).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from kandji_snapshots.collect.refresh import BudgetExhausted, PreviousRows
from kandji_snapshots.errors import KandjiApiError, KandjiAuthError
from kandji_snapshots.kandji.permissions import prism_permission
from kandji_snapshots.snapshots.catalog import Manifest
from kandji_snapshots.snapshots.schema import POSTURE_CATEGORY_COLUMNS
from kandji_snapshots.snapshots.storage import ObjectStore
from kandji_snapshots.snapshots.table_io import iter_lines

logger = logging.getLogger(__name__)

POSTURE_CATEGORIES: tuple[str, ...] = tuple(POSTURE_CATEGORY_COLUMNS)

# Columns every Prism row carries about the device: the devices table already holds them.
_DEVICE_COLUMNS = frozenset({"device_id", "serial_number", "blueprint_id", "blueprint_name", "model_id", "asset_tag",
                             "tags"})
# device_information repeats device-list fields; the devices table is where they are compared.
_LIST_DUPLICATES = frozenset({"mdm_enabled", "agent_installed"})

READ, FORBIDDEN, UNAVAILABLE, FAILED, NO_BUDGET = "read", "forbidden", "unavailable", "failed", "no_budget"

# A row of these categories without this column says nothing about what the category is for (on or
# off): unknown for the device, like no row at all.
_STATE_COLUMNS = {"filevault": "status", "application_firewall": "status"}


def category_columns(category: str, row: dict[str, Any]) -> dict[str, Any]:
    """A Prism row without the device's own columns: what the category itself reports."""
    columns = {}
    for key, value in row.items():
        if key in _DEVICE_COLUMNS or (category == "device_information" and key in _LIST_DUPLICATES):
            continue
        if key.startswith("device__"):
            if category == "device_information" and key == "device__family":
                columns["device_family"] = value
            continue
        columns[key] = value
    return columns


class PrismCategoryApi(Protocol):
    def iter_prism_category(self, category: str) -> Iterator[dict[str, Any]]: ...


@dataclass
class CategoryRead:
    """What one category gave this run: the manifest's `posture.categories.<name>`."""

    status: str = READ
    rows: int = 0  # rows Prism served
    requests: int = 0  # requests spent on it, retries included
    devices: int = 0  # listed devices it reported on
    permission: str | None = None  # the missing permission, when forbidden
    error: str | None = None  # why it was skipped
    carried: int | None = None  # devices whose value was carried from an earlier read (not read now)


class PostureIndex:
    """The categories read this run, by device; memory: a tuple of values per device and category."""

    def __init__(self, fetched_at: str):
        self.fetched_at = fetched_at
        self.categories: dict[str, CategoryRead] = {}
        self._values: dict[str, dict[str, tuple[Any, ...]]] = {}  # category -> device_id -> values

    def add(self, category: str, by_device: dict[str, tuple[Any, ...]], read: CategoryRead) -> None:
        self.categories[category] = read
        if read.status == READ:
            self._values[category] = by_device

    def take(self, device_id: str, previous: Callable[[str], LastRead | None] = lambda category: None
             ) -> tuple[dict[str, dict[str, Any] | None], dict[str, str]]:
        """One device's columns per category (None: unknown, never read), and `carried_from`; each device once.

        A category not read now for the device keeps its value in `previous(category)`, the device's row
        in the previous snapshot (asked for only then), with as of when that value was known.
        """
        out: dict[str, dict[str, Any] | None] = {}
        carried_from: dict[str, str] = {}
        for category in POSTURE_CATEGORIES:
            values = self._values.get(category, {}).pop(device_id, None)
            out[category] = None if values is None else _unpack(category, values)
            if _says_something(category, out[category]):
                continue
            last = previous(category)
            kept = last.row.get(category) if last else None
            if not _says_something(category, kept):
                continue  # nothing better known: the category stays as read (or unknown)
            out[category] = _with_extra(category, kept, last.row)
            carried_from[category] = last.known_at(category)
            read = self.categories.get(category)
            if read is not None:
                read.carried = (read.carried or 0) + 1
        return out, carried_from

    def summary(self) -> dict[str, Any]:
        """The manifest's `posture` section."""
        return {
            "fetched_at": self.fetched_at,
            "categories": {name: {key: value for key, value in asdict(read).items() if value is not None}
                           for name, read in self.categories.items()},
            "missing_permissions": [read.permission for read in self.categories.values()
                                    if read.status == FORBIDDEN and read.permission],
        }

    @property
    def read_categories(self) -> list[str]:
        return [name for name, read in self.categories.items() if read.status == READ]


def _says_something(category: str, columns: dict[str, Any] | None) -> bool:
    state = _STATE_COLUMNS.get(category)
    return columns is not None and (state is None or columns.get(state) is not None)


def _with_extra(category: str, columns: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """A category's columns in a stored row plus its values that did not fit them (kept in `extra`)."""
    prefix = f"{category}."
    extra = json.loads(row["extra"]) if row.get("extra") else {}
    return {**columns, **{path[len(prefix):]: value for path, value in extra.items() if path.startswith(prefix)}}


@dataclass(frozen=True)
class LastRead:
    """A device's device_posture row in the previous snapshot, and when that snapshot's run finished."""

    row: dict[str, Any]
    run_finished_at: str

    def known_at(self, category: str) -> str:
        """As of when the row's value of `category` was known: when the run that read it finished.

        That run's end, not the read's moment: details fetched later in the same run are no newer."""
        return (self.row.get("carried_from") or {}).get(category) or self.run_finished_at


class PreviousPosture:
    """The previous snapshot's device_posture rows, walked once in device order; opened on first use."""

    def __init__(self, store: ObjectStore, previous: Manifest | None):
        self._store = store
        self._previous = previous
        self._rows: PreviousRows | None = None

    def line(self, device_id: str) -> bytes | None:
        """The device's row, raw (devices must be asked for in ascending order), None when it had none."""
        if self._previous is None or "device_posture" not in self._previous.document["tables"]:
            return None  # no snapshot before, or one written before posture existed
        if self._rows is None:
            self._rows = PreviousRows(iter_lines(self._store, self._previous.table_keys("device_posture")))
        lines = self._rows.take(device_id)
        return lines[0] if lines else None

    def for_device(self, device_id: str) -> Callable[[str], LastRead | None]:
        """`PostureIndex.take`'s `previous`: the device's row, read at most once and only if asked, and
        parsed only when it holds the category asked for (a non-Mac's Mac-only categories are null
        every run: that costs no parsing)."""
        cache: dict[str, Any] = {}

        def previous(category: str) -> LastRead | None:
            if "line" not in cache:
                cache["line"] = self.line(device_id)
            line = cache["line"]
            if line is None or _is_null_column(line, category):
                return None
            if "row" not in cache:
                cache["row"] = LastRead(json.loads(line), self._previous.document["finished_at"])
            return cache["row"]
        return previous


# `"<category>":` first occurs in a device_posture line as its column: the category columns come
# before `carried_from` (whose fields bear their names), the values before them are JSON strings
# (a quote inside is escaped) and no category's field is named like a category.
_COLUMN_KEYS = {category: f'"{category}":'.encode() for category in POSTURE_CATEGORIES}


def _is_null_column(line: bytes, category: str) -> bool:
    key = _COLUMN_KEYS[category]
    at = line.find(key)
    return at < 0 or line.startswith(b"null", at + len(key))


def _pack(category: str, columns: dict[str, Any]) -> tuple[Any, ...]:
    """Known columns in schema order, then a dict of the unknown ones (or None)."""
    known = POSTURE_CATEGORY_COLUMNS[category]
    values = [_shared(columns.get(name)) for name in known]
    unknown = {key: value for key, value in columns.items() if key not in known}
    return (*values, unknown or None)


def _unpack(category: str, values: tuple[Any, ...]) -> dict[str, Any]:
    columns = dict(zip(POSTURE_CATEGORY_COLUMNS[category], values))
    if values[-1]:
        columns.update(values[-1])
    return columns


def _shared(value: Any) -> Any:
    """Short strings repeat across the fleet ("full", "1.6", "throttled"): keep one copy of each."""
    return sys.intern(value) if isinstance(value, str) and len(value) <= 24 else value


class PostureReader:
    """Reads the posture categories once per run, each on its own terms."""

    def __init__(self, api: PrismCategoryApi, *, requests_spent: Callable[[str], int] = lambda endpoint: 0,
                 categories: Iterable[str] = POSTURE_CATEGORIES):
        self._api = api
        self._requests_spent = requests_spent
        self._categories = tuple(categories)

    def read(self, device_ids: Iterable[str], fetched_at: str) -> PostureIndex:
        listed = {device_id: device_id for device_id in device_ids}
        index = PostureIndex(fetched_at)
        out_of_budget = False
        for category in self._categories:
            if out_of_budget:
                index.add(category, {}, CategoryRead(NO_BUDGET, error="the run's request budget was spent"))
                continue
            endpoint = f"prism_{category}"
            spent_before = self._requests_spent(endpoint)
            by_device, read = self._read_category(category, listed)
            read.requests = self._requests_spent(endpoint) - spent_before
            out_of_budget = read.status == NO_BUDGET
            index.add(category, by_device, read)
            log = logger.info if read.status == READ else logger.warning
            log("posture category " + ("read" if read.status == READ else "skipped"),
                extra={"category": category,
                       **{key: value for key, value in asdict(read).items() if value is not None}})
        return index

    def _read_category(self, category: str, listed: dict[str, str]) -> tuple[dict[str, tuple[Any, ...]], CategoryRead]:
        by_device: dict[str, tuple[Any, ...]] = {}
        rows = 0
        try:
            for row in self._api.iter_prism_category(category):
                rows += 1
                device_id = listed.get(str(row.get("device_id")))
                if device_id is not None:  # rows of devices not in this run's list are not kept
                    by_device[device_id] = _pack(category, category_columns(category, row))
        except KandjiAuthError as error:
            return {}, CategoryRead(FORBIDDEN, permission=prism_permission(category),
                                    error=f"{error.status}: the token may not read it")
        except BudgetExhausted as error:
            return {}, CategoryRead(NO_BUDGET, error=str(error))
        except KandjiApiError as error:
            if error.status in (400, 404):
                return {}, CategoryRead(UNAVAILABLE, error=f"{error.status}: not available on this tenant")
            return {}, CategoryRead(FAILED, error=error.cause)
        return by_device, CategoryRead(READ, rows=rows, devices=len(by_device))
