"""A test hook on top of the generated fleet: raw values placed into what the API serves, and set-like
lists served in another order. Kept apart from the fleet's generation so it works whatever shapes the
fleet produces; the server applies it to each list item, details object and apps list it serves.

    sim.raw_values.set(device_id, "details", "general.device_name", "\\ud83d")  # served as the JSON text "\\ud83d"
    sim.raw_values.set(device_id, "list_item", "last_check_in", "0001-01-01T00:00:00+01:00")
    sim.raw_values.set(device_id, "apps", "0.app_name", "\\udc00")  # the first app of the list
    sim.raw_values.reorder_lists(seed=2)  # tags, installed_profiles, volumes, users, ... in another order

Values are Python objects, JSON-encoded like everything the simulator serves (`json.dumps`, ASCII): a lone
surrogate in a `str` goes out as its `\\uXXXX` escape, exactly as a real API would send half an emoji.
"""
from __future__ import annotations

import copy
import random
import threading
from typing import Any

KINDS = ("list_item", "details", "apps")

# Lists whose order carries no meaning (Kandji may serve them in any order), by payload kind.
SET_LIKE_LISTS = {
    "list_item": ("tags",),
    "details": ("tags", "installed_profiles", "volumes", "mdm.mdm_enabled_user", "users.regular_users",
                "users.system_users"),
    "apps": (),
}


class RawValues:
    def __init__(self) -> None:
        self._values: dict[tuple[str, str], list[tuple[list[str], Any]]] = {}
        self._reorder_seed: int | None = None
        self._lock = threading.Lock()

    def set(self, device_id: str, kind: str, path: str, value: Any) -> None:
        """Serve `value` at the dotted `path` of the device's payload (list indices as numbers)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        with self._lock:
            self._values.setdefault((kind, device_id), []).append((path.split("."), value))

    def reorder_lists(self, seed: int | None) -> None:
        """Serve every set-like list in an order drawn from `seed` (never the generated order when a
        list has two distinct items); None serves them as generated again."""
        with self._lock:
            self._reorder_seed = seed

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._reorder_seed = None

    def apply(self, kind: str, device_id: str, payload: Any) -> Any:
        """The payload as served: a modified deep copy, or the payload itself when nothing applies."""
        with self._lock:
            values = list(self._values.get((kind, device_id), ()))
            seed = self._reorder_seed
        if not values and seed is None:
            return payload
        payload = copy.deepcopy(payload)
        for path, value in values:
            _put(payload, path, copy.deepcopy(value))
        if seed is not None:
            for dotted in SET_LIKE_LISTS[kind]:
                _reorder(payload, dotted.split("."), random.Random(f"{seed}:{device_id}:{dotted}"))
        return payload


def _put(payload: Any, path: list[str], value: Any) -> None:
    target = payload
    for key in path[:-1]:
        if isinstance(target, list):
            target = target[int(key)]
        else:
            if not isinstance(target.get(key), (dict, list)):
                target[key] = {}
            target = target[key]
    if isinstance(target, list):
        target[int(path[-1])] = value
    else:
        target[path[-1]] = value


def _reorder(payload: Any, path: list[str], rng: random.Random) -> None:
    parent = payload
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    items = parent.get(path[-1]) if isinstance(parent, dict) else None
    if not isinstance(items, list) or len(items) < 2:
        return
    order = list(items)
    rng.shuffle(order)
    if order == items:  # a shuffle may return the same order: rotate so the order really changes
        order = items[1:] + items[:1]
    parent[path[-1]] = order
