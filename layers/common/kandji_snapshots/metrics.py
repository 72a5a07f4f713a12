"""What each collector and differ run reports to CloudWatch (EMF through Powertools Metrics): every metric
name the alarms and the dashboard use is written here."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from kandji_snapshots.diff.events import CHANGE_TYPES
from kandji_snapshots.errors import KandjiAuthError, RateLimitExhausted


def record_requests(metrics: Any, requests: dict[str, Any]) -> None:
    """Request counters: recorded even when the run fails, which is when they matter most."""
    metrics.add_metric("KandjiRequests", MetricUnit.Count, requests["total"])
    metrics.add_metric("KandjiRetries", MetricUnit.Count, requests["retries"])
    metrics.add_metric("KandjiRateLimited", MetricUnit.Count, requests["rate_limited"])


def record_snapshot(metrics: Any, manifest: dict[str, Any]) -> None:
    metrics.add_metric("Devices", MetricUnit.Count, manifest["device_count"])
    metrics.add_metric("SkippedDevices", MetricUnit.Count, len(manifest["skipped_devices"]))
    metrics.add_metric("RefreshedDevices", MetricUnit.Count, manifest["refreshed_devices"])
    metrics.add_metric("CarriedDevices", MetricUnit.Count, manifest["carried_devices"])
    metrics.add_metric("PendingDevices", MetricUnit.Count, manifest.get("pending_devices", 0))
    metrics.add_metric("RunDuration", MetricUnit.Seconds, manifest["duration_seconds"])
    metrics.add_metric("SnapshotsCommitted", MetricUnit.Count, 1)
    record_posture(metrics, manifest.get("posture") or {})


def record_posture(metrics: Any, posture: dict[str, Any]) -> None:
    """Per Prism category: devices covered, rows read, requests spent (PostureDevicesFilevault, ...);
    and how many categories were skipped (no permission, unknown to the tenant, unreadable)."""
    categories = posture.get("categories") or {}
    for category, read in categories.items():
        name = "".join(word.capitalize() for word in category.split("_"))
        for kind, key in (("Devices", "devices"), ("Rows", "rows"), ("Requests", "requests")):
            metrics.add_metric(f"Posture{kind}{name}", MetricUnit.Count, int(read.get(key) or 0))
    if categories:
        skipped = sum(1 for read in categories.values() if read.get("status") != "read")
        metrics.add_metric("SkippedPostureCategories", MetricUnit.Count, skipped)


def record_failure(metrics: Any, error: BaseException) -> None:
    """What kind of failure stopped the run: the alarms watch these."""
    metrics.add_metric("CollectionFailed", MetricUnit.Count, 1)
    if isinstance(error, KandjiAuthError):
        metrics.add_metric("AuthenticationFailed", MetricUnit.Count, 1)
    if isinstance(error, RateLimitExhausted):
        metrics.add_metric("RateLimitExhausted", MetricUnit.Count, 1)


def record_diff(metrics: Any, result: Any) -> None:
    """A differ run (a DifferResult): events by type, high-severity count, published count, duration."""
    metrics.add_metric("PublishedMessages", MetricUnit.Count, result.published_messages)
    metrics.add_metric("DiffDuration", MetricUnit.Seconds, result.duration_seconds)
    if result.already_done:  # a redelivered trigger: its events were counted the first time
        return
    for change_type in CHANGE_TYPES:
        name = "".join(part.title() for part in change_type.split("_"))
        metrics.add_metric(f"Events{name}", MetricUnit.Count, result.counts_by_change_type.get(change_type, 0))
    metrics.add_metric("ChangeEvents", MetricUnit.Count, result.event_count)
    metrics.add_metric("HighSeverityEvents", MetricUnit.Count, result.counts_by_severity.get("high", 0))
    metrics.add_metric("SuppressedRuns", MetricUnit.Count, int(result.suppressed))
