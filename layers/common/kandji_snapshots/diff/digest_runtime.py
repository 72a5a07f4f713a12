"""Runs the daily digest: the one place that wires its adapters.

Environment:
    SNAPSHOT_BUCKET      the bucket holding the changes files (required)
    DIGEST_TOPIC_ARN     the SNS topic the daily digest goes to (required)
    ATHENA_WORKGROUP, ATHENA_DATABASE  optional: named in the digest (where to query)
AWS endpoints come from boto3's own configuration (AWS_ENDPOINT_URL for local runs and tests). The store,
the publisher and the clock are passed in by whoever does not want S3, SNS or the real time (tests);
boto3 is imported only when they are not. Apart from the differ's wiring (diff/runtime.py), so the digest's
Lambda does not import the differ at its cold start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from kandji_snapshots.diff.digest import DigestRequest, publish_daily_digest
from kandji_snapshots.diff.messages import MessageContext
from kandji_snapshots.diff.publisher import Publisher, SnsPublisher
from kandji_snapshots.settings import required_setting, snapshot_bucket
from kandji_snapshots.snapshots.storage import ObjectStore, S3ObjectStore
from kandji_snapshots.snapshots.timeutil import Clock, SystemClock


def run_digest(event: Mapping[str, Any] | None, lease_seconds: float, *, env: Mapping[str, str] | None = None,
               store: ObjectStore | None = None, publisher: Publisher | None = None,
               clock: Clock = SystemClock) -> dict[str, Any]:
    """The daily digest the event asks for ({} for yesterday, {"day": ..., "force": ...}), on S3 and the
    digest topic unless a store and a publisher are given. The claim on the day lasts `lease_seconds`."""
    env = os.environ if env is None else env
    now = clock.now()
    request = DigestRequest.from_event(event, now)
    if store is None or publisher is None:
        import boto3

        store = store or S3ObjectStore(boto3.client("s3"), snapshot_bucket(env))
        publisher = publisher or SnsPublisher(
            boto3.client("sns"), required_setting(env, "DIGEST_TOPIC_ARN", "the SNS topic for the daily digest"))
    return publish_daily_digest(store, publisher, request, MessageContext.from_env(env), now=now,
                                lease_seconds=lease_seconds)
