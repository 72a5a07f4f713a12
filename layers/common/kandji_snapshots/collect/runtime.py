"""Builds a collector: the one place that wires the client, its pacing, the budget and the store.

`build_collector` serves the Lambda (`run_collection`), the CLI, the benchmarks and the tests alike; the
clock (monotonic time, sleep, wall time) and the store are passed in, so a test runs a deadline on a fake
clock. boto3 and Powertools are imported only where the Lambda's own adapters are made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import requests

from kandji_snapshots.collect.audit import AuditSettings
from kandji_snapshots.collect.collector import SnapshotCollector
from kandji_snapshots.collect.refresh import RequestBudget
from kandji_snapshots.collect.tenant_sources import TenantReader, sources_setting
from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.kandji.client import KandjiClient, RequestStats, RetryPolicy
from kandji_snapshots.kandji.config import KandjiCredentials, parse_secret
from kandji_snapshots.kandji.rate_limiter import RateLimiter
from kandji_snapshots.metrics import record_failure, record_requests, record_snapshot
from kandji_snapshots.settings import CollectorEnvironment, CollectorSettings
from kandji_snapshots.snapshots.storage import ObjectStore, S3ObjectStore
from kandji_snapshots.snapshots.timeutil import Clock, SystemClock

logger = logging.getLogger(__name__)

SECRET_CACHE_SECONDS = 300
# Time kept back from the Lambda's limit to write the last parts and the manifest.
WRITE_MARGIN_SECONDS = 45.0


@dataclass
class CollectorRun:
    """A collector ready to run, with the client's counters and the run's budget."""

    collector: SnapshotCollector
    client: KandjiClient
    budget: RequestBudget

    @property
    def stats(self) -> RequestStats:
        return self.client.stats


def build_collector(credentials: KandjiCredentials, store: ObjectStore,
                    settings: CollectorSettings = CollectorSettings(), *, seconds_left: float | None = None,
                    clock: Clock = SystemClock,
                    retry: RetryPolicy = RetryPolicy(), session: requests.Session | None = None,
                    progress: Callable[[int, int], None] | None = None, temp_dir: str | None = None) -> CollectorRun:
    """A collector for one run. `seconds_left`: the time the run has, of which WRITE_MARGIN_SECONDS is kept
    back for writing (None: no deadline, as on the command line). `temp_dir`: where Prism's rows are sorted."""
    deadline = None
    if seconds_left is not None:
        deadline = clock.monotonic() + max(1.0, seconds_left - WRITE_MARGIN_SECONDS)
    budget = RequestBudget(per_run=settings.request_budget, hourly_reserve=settings.hourly_reserve,
                           requests_per_second=settings.requests_per_second, deadline=deadline, clock=clock.monotonic)
    limiter = RateLimiter(settings.requests_per_second, clock=clock.monotonic, sleep=clock.sleep)
    client = KandjiClient(credentials, limiter=limiter, session=session, deadline=deadline, retry=retry,
                          clock=clock.monotonic, sleep=clock.sleep, pool_size=settings.max_workers, budget=budget)
    if temp_dir is not None:
        settings = replace(settings, temp_dir=temp_dir)
    sources = sources_setting(settings.tenant_sources)
    tenant = None
    if sources:
        tenant = TenantReader(client, store, clock=clock.now, sources=sources,
                              requests_spent=lambda endpoint: int(
                                  client.stats.as_dict()["by_endpoint"].get(endpoint, 0)),
                              audit=AuditSettings(settings.audit_backfill_days, settings.audit_overlap_hours))
    collector = SnapshotCollector(client, store, settings=settings, clock=clock.now, sleep=clock.sleep,
                                  request_stats=client.stats.as_dict, budget=budget, progress=progress, tenant=tenant)
    return CollectorRun(collector, client, budget)


# --- the Lambda's adapters ---------------------------------------------------------------------------------

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
    from aws_lambda_powertools.utilities import parameters

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


def lambda_collector(remaining_seconds: float, environ: Mapping[str, str] | None = None, *,
                     clock: Clock = SystemClock, store: ObjectStore | None = None) -> CollectorRun:
    """The collector as the Lambda runs it: settings from the environment, token from the secret, S3."""
    env = CollectorEnvironment.from_env(environ)
    credentials = read_credentials(env)
    if store is None:
        import boto3

        store = S3ObjectStore(boto3.client("s3"), env.bucket)
    return build_collector(credentials, store, env.settings, seconds_left=remaining_seconds, clock=clock)


def run_collection(scheduled_time: str | None, remaining_seconds: float, metrics: Any, *,
                   clock: Clock = SystemClock) -> dict[str, Any]:
    """One scheduled run: build, collect, and report success or the kind of failure as metrics."""
    try:
        run = lambda_collector(remaining_seconds, clock=clock)
        try:
            manifest = run.collector.collect(correlation_id=scheduled_time)
        finally:
            record_requests(metrics, run.stats.as_dict())
    except Exception as error:
        record_failure(metrics, error)
        logger.error("collection failed: nothing was committed",
                     extra={"error": str(error), "error_type": type(error).__name__})
        raise
    record_snapshot(metrics, manifest.document)
    return {"snapshot_id": manifest.snapshot_id, "devices": manifest.document["device_count"],
            "skipped_devices": len(manifest.document["skipped_devices"])}
