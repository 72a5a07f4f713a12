"""The claim-once records (snapshots/claims.py) on every store, S3's conditional writes through moto."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest

from kandji_snapshots.snapshots.claims import ClaimOnce
from kandji_snapshots.snapshots.storage import LocalObjectStore, MemoryObjectStore, S3ObjectStore

NOW = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)
KEY = "changes/_claims/work.json"


@pytest.fixture(params=["memory", "folder", "s3"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryObjectStore()
    if request.param == "folder":
        return LocalObjectStore(tmp_path)
    request.getfixturevalue("aws")
    boto3.client("s3").create_bucket(Bucket="claims-test")
    return S3ObjectStore(boto3.client("s3"), "claims-test")


def test_replace_is_conditional_on_the_version_read(store):
    assert store.create(KEY, b'{"v": 1}') is True
    body, version = store.get_versioned(KEY)
    assert body == b'{"v": 1}'
    assert store.replace(KEY, b'{"v": 2}', version=version) is True
    assert store.replace(KEY, b'{"v": 3}', version=version) is False  # S3: If-Match on a stale ETag, 412
    assert store.get(KEY) == b'{"v": 2}'
    assert store.replace("changes/_claims/absent.json", b"{}", version=version) is False


def test_one_claimant_wins_and_a_completed_claim_is_never_taken_over(store):
    claims = ClaimOnce(store, KEY)
    first = claims.acquire("a", now=NOW)
    assert first.won and claims.acquire("b", now=NOW).won is False
    assert claims.update(first, claims.states.completed, now=NOW) is not None
    late = NOW + timedelta(days=1)
    assert claims.acquire("a", now=late).won is False  # not even by its owner: the work is done
    assert claims.acquire("c", now=late, may_take_over=lambda held: True).won is True  # unless the caller says


def test_the_owner_retry_a_lapsed_claim_and_a_failed_one_are_taken_over(store):
    claims = ClaimOnce(store, KEY)
    held = claims.acquire("a", now=NOW, lease_seconds=60)
    assert claims.acquire("b", now=NOW + timedelta(seconds=59)).won is False
    assert claims.acquire("a", now=NOW + timedelta(seconds=1), lease_seconds=60).won is True  # its owner's retry
    assert claims.acquire("b", now=NOW + timedelta(seconds=60)).won is False  # the retry's lease runs on
    lapsed = claims.acquire("b", now=NOW + timedelta(seconds=62))
    assert lapsed.won and claims.owner(lapsed) == "b"
    assert claims.update(held, claims.states.completed, now=NOW) is None  # "a" lost it: its update is refused
    assert claims.update(lapsed, claims.states.failed, now=NOW) is not None
    assert claims.acquire("c", now=NOW).won is True


def test_of_two_takeovers_of_one_record_only_one_wins(store):
    claims = ClaimOnce(store, KEY)
    failed = claims.acquire("a", now=NOW)
    claims.update(failed, claims.states.failed, now=NOW)
    seen = claims.read()
    assert store.replace(KEY, b'{"owner": "b", "state": "in_progress"}', version=seen.version) is True
    assert store.replace(KEY, b'{"owner": "c", "state": "in_progress"}', version=seen.version) is False
    assert claims.acquire("c", now=NOW).won is False  # "b" holds it now, in progress
