"""Builds the collector from the environment: the one place that wires real adapters."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from collections.abc import Mapping
from typing import Any

import boto3
from aws_lambda_powertools.utilities import parameters

from kandji_snapshots.kandji.config import KandjiCredentials, parse_secret
from kandji_snapshots.collect.collector import CollectorSettings, SnapshotCollector
from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.kandji.client import KandjiClient, RequestStats
from kandji_snapshots.metrics import record_failure, record_requests, record_snapshot
from kandji_snapshots.kandji.rate_limiter import RateLimiter
from kandji_snapshots.collect.refresh import RequestBudget
from kandji_snapshots.settings import CollectorEnvironment
from kandji_snapshots.snapshots.storage import S3ObjectStore

logger = logging.getLogger(__name__)

SECRET_CACHE_SECONDS = 300
# Time kept back from the Lambda's limit to write the last parts and the manifest.
WRITE_MARGIN_SECONDS = 45.0


@contextmanager
def _quiet_botocore():
    """botocore logs whole responses at DEBUG; GetSecretValue's response is the token."""
    botocore_logger = logging.getLogger("botocore")
    level = botocore_logger.level
    botocore_logger.setLevel(max(level, logging.INFO))
    try:
        yield
    finally:
        botocore_logger.setLevel(level)


def read_credentials(env: CollectorEnvironment) -> KandjiCredentials:
    try:
        with _quiet_botocore():
            secret = parameters.get_secret(env.secret_id, max_age=SECRET_CACHE_SECONDS)
    except parameters.exceptions.GetParameterError as error:
        raise ConfigurationError(
            f"Could not read the Kandji secret {env.secret_id}: {error.__cause__ or error}. Check that it "
            "exists, has a value (aws secretsmanager put-secret-value) and that the collector may read it."
        ) from None
    if isinstance(secret, bytes):
        secret = secret.decode()
    return parse_secret(str(secret), fallback_url=env.api_url, allow_insecure_localhost=env.allow_insecure_localhost)


def build_collector(remaining_seconds: float, environ: Mapping[str, str] | None = None) -> tuple[SnapshotCollector, RequestStats]:
    env = CollectorEnvironment.from_env(environ)
    credentials = read_credentials(env)
    stats = RequestStats()
    deadline = time.monotonic() + max(1.0, remaining_seconds - WRITE_MARGIN_SECONDS)
    budget = RequestBudget(per_run=env.request_budget, hourly_reserve=env.hourly_reserve,
                           requests_per_second=env.requests_per_second, deadline=deadline)
    client = KandjiClient(credentials, limiter=RateLimiter(env.requests_per_second), deadline=deadline,
                          stats=stats, pool_size=env.max_workers, budget=budget)
    store = S3ObjectStore(boto3.client("s3"), env.bucket)
    settings = CollectorSettings(max_workers=env.max_workers, apps_source=env.apps_source,
                                 max_fleet_drop_percent=env.max_fleet_drop_percent)
    collector = SnapshotCollector(client, store, settings=settings, request_stats=stats.as_dict, budget=budget)
    return collector, stats


def run_collection(scheduled_time: str | None, remaining_seconds: float, metrics: Any) -> dict[str, Any]:
    """One scheduled run: build, collect, and report success or the kind of failure as metrics."""
    try:
        collector, stats = build_collector(remaining_seconds)
        try:
            manifest = collector.collect(correlation_id=scheduled_time)
        finally:
            record_requests(metrics, stats.as_dict())
    except Exception as error:
        record_failure(metrics, error)
        logger.error("collection failed: nothing was committed",
                     extra={"error": str(error), "error_type": type(error).__name__})
        raise
    record_snapshot(metrics, manifest.document)
    return {"snapshot_id": manifest.snapshot_id, "devices": manifest.document["device_count"],
            "skipped_devices": len(manifest.document["skipped_devices"])}
