"""Timestamps and snapshot ids are UTC whatever the machine's zone (the CLI runs on laptops, not in Lambda)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from kandji_snapshots.snapshots.timeutil import (
    format_timestamp,
    normalize_timestamp,
    parse_timestamp,
    snapshot_id_for,
    snapshot_time,
    utc_now,
)


@pytest.fixture
def away_from_utc(monkeypatch):
    """The process runs in New York time (UTC-5 in November) for one test."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(("raw", "expected"), [
    ("2024-05-13 20:09:23 +0200", "2024-05-13T18:09:23.000000Z"),  # east of UTC: earlier in UTC
    ("2024-05-13T20:09:23-05:30", "2024-05-14T01:39:23.000000Z"),
    ("2024-05-13T20:09:23.5Z", "2024-05-13T20:09:23.500000Z"),  # a short fraction is tenths, not millionths
    ("2024-05-13T20:09:23.123456789Z", "2024-05-13T20:09:23.123456Z"),  # nanoseconds: cut, not rounded
    ("2024-05-13T20:09Z", "2024-05-13T20:09:00.000000Z"),  # no seconds
    ("2024-05-13 20:09:23", "2024-05-13T20:09:23.000000Z"),  # no offset: UTC
])
def test_offsets_fractions_and_missing_parts(raw, expected):
    assert normalize_timestamp(raw) == expected


def test_everything_stays_utc_on_a_machine_in_another_zone(away_from_utc):
    assert datetime(2026, 11, 23, 12, 0).astimezone().utcoffset() == timedelta(hours=-5)  # the zone took
    parsed = parse_timestamp("2026-11-23 10:00:00")
    assert parsed == datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc) and parsed.utcoffset() == timedelta(0)
    assert normalize_timestamp("2026-11-23 10:00:00") == "2026-11-23T10:00:00.000000Z"
    moment = datetime(2026, 11, 23, 23, 30, tzinfo=timezone.utc)
    assert format_timestamp(moment) == "2026-11-23T23:30:00.000000Z"
    assert snapshot_id_for(moment) == "20261123T233000Z"
    assert snapshot_time("20261123T233000Z") == moment and snapshot_time("20261123T233000Z").utcoffset() == timedelta(0)
    assert utc_now().utcoffset() == timedelta(0)
