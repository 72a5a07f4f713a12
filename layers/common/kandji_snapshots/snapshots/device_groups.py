"""Walking a stream sorted by device id, one device's items at a time, without loading it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class DeviceGroups(Generic[Item]):
    """Hands out the items of one device per call; devices must be asked for in ascending order.

    Items of devices never asked for are skipped on the way, so a caller may ask only for the
    devices it needs (the carried ones, say) and the stream is still read once, front to back.
    """

    def __init__(self, items: Iterable[Item], device_id_of: Callable[[Item], str]):
        self._items = iter(items)
        self._device_id_of = device_id_of
        self._pending: tuple[str, Item] | None = None

    def take(self, device_id: str) -> list[Item]:
        found = []
        while True:
            if self._pending is None:
                item = next(self._items, None)
                if item is None:
                    return found
                self._pending = (self._device_id_of(item), item)
            pending_id, item = self._pending
            if pending_id > device_id:
                return found
            if pending_id == device_id:
                found.append(item)
            self._pending = None
