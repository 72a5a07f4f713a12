"""Timestamps: Kandji's many formats in, one ISO 8601 UTC form out."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol

# `2026-11-23T10:15:00.123456Z`: one fixed width, so strings sort like the instants they name.
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
SNAPSHOT_ID_FORMAT = "%Y%m%dT%H%M%SZ"

# Covers every form in the API notes: `T` or space separator, optional fraction,
# `Z`, `+00:00`, ` +0000` or no offset (taken as UTC).
_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


def parse_timestamp(value: object) -> datetime | None:
    """Parse any timestamp form Kandji sends; None for empty or non-timestamp text."""
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        parsed = datetime(int(year), int(month), int(day), int(hour), int(minute),
                          int(second or 0), micros, tzinfo=timezone.utc)
    except ValueError:
        return None
    if offset and offset.upper() != "Z":
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:])
        try:
            parsed -= sign * timedelta(minutes=minutes)
        except OverflowError:  # `0001-01-01T00:00:00+01:00` is in year 0 in UTC: not representable
            return None
    return parsed


def looks_like_timestamp(value: object) -> bool:
    """Text in a timestamp form, whether or not it names a representable instant."""
    return isinstance(value, str) and _TIMESTAMP.match(value.strip()) is not None


def format_timestamp(moment: datetime) -> str:
    # Not strftime: its `%Y` writes year 1 as `1` on Linux, which breaks the fixed width.
    utc = moment.astimezone(timezone.utc)
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
            f"{utc.second:02d}.{utc.microsecond:06d}Z")


def normalize_timestamp(value: object) -> str | None:
    parsed = parse_timestamp(value)
    return format_timestamp(parsed) if parsed else None


def snapshot_id_for(moment: datetime) -> str:
    """`YYYYMMDDTHHMMSSZ` of the run's start: ids sort in time order."""
    return moment.astimezone(timezone.utc).strftime(SNAPSHOT_ID_FORMAT)


def snapshot_time(snapshot_id: str) -> datetime:
    return datetime.strptime(snapshot_id, SNAPSHOT_ID_FORMAT).replace(tzinfo=timezone.utc)


def partition_date(snapshot_id: str) -> str:
    """The `dt=` partition (UTC day) a snapshot belongs to."""
    return f"{snapshot_id[0:4]}-{snapshot_id[4:6]}-{snapshot_id[6:8]}"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Clock(Protocol):
    """What a run reads and waits on: `monotonic` for deadlines and pacing, `sleep` for waits, `now` for
    snapshot ids and records. SystemClock is the real one; tests hand in their own."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def now(self) -> datetime: ...


class SystemClock:
    """The real time, read and waited on by every run unless a test hands in its own clock with the same
    three methods: `monotonic` for deadlines and pacing, `sleep` for waits, `now` for snapshot ids."""

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)
    now = staticmethod(utc_now)
