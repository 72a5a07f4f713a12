"""Two snapshots' device streams walked side by side: the stages the comparison's loop is built from.

`merge_by_device` pairs two streams sorted by device_id (a merge-join); `after_checkpoint` drops the
devices an earlier attempt already compared; `pause_at_deadline` stops at a device boundary when the
time runs short. Each is a generator over `DevicePair`s, so the comparison chains them and only
decides what a pair means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kandji_snapshots.diff.progress import ComparisonPaused
from kandji_snapshots.snapshots.device_rows import DeviceRows

# Devices compared between two deadline checks: a check costs a call, a device costs far more.
STOP_CHECK_EVERY = 16


@dataclass(frozen=True)
class DevicePair:
    """One device_id and its rows in each snapshot; a side that does not list the device has none."""

    device_id: bytes
    before: DeviceRows | None
    after: DeviceRows | None


def merge_by_device(before: Iterator[DeviceRows], after: Iterator[DeviceRows]) -> Iterator[DevicePair]:
    """Pair two device streams sorted by device_id, in device_id order."""
    old, new = next(before, None), next(after, None)
    while old is not None or new is not None:
        if new is None or (old is not None and old.device_id < new.device_id):
            yield DevicePair(old.device_id, old, None)
            old = next(before, None)
        elif old is None or new.device_id < old.device_id:
            yield DevicePair(new.device_id, None, new)
            new = next(after, None)
        else:
            yield DevicePair(new.device_id, old, new)
            old, new = next(before, None), next(after, None)


def after_checkpoint(pairs: Iterator[DevicePair], compared_through: bytes | None) -> Iterator[DevicePair]:
    """The pairs past `compared_through`: an earlier attempt compared every device up to it (None: none)."""
    for pair in pairs:
        if compared_through is None or pair.device_id > compared_through:
            yield pair


def pause_at_deadline(pairs: Iterator[DevicePair], should_stop: Callable[[], bool],
                      compared_through: bytes | None) -> Iterator[DevicePair]:
    """The pairs, until `should_stop` (asked every STOP_CHECK_EVERY devices) says the time is short: then
    ComparisonPaused names the last device whose events were all taken (`compared_through` at first)."""
    for step, pair in enumerate(pairs, start=1):
        if step % STOP_CHECK_EVERY == 0 and should_stop():
            raise ComparisonPaused(compared_through)
        compared_through = pair.device_id
        yield pair
