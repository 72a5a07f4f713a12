"""Builds the differ from the environment and reads its trigger: the one place that wires real adapters.

Environment:
    SNAPSHOT_BUCKET      the bucket holding snapshots and changes (required)
    CHANGES_TOPIC_ARN    the SNS topic change events go to (required)
    MAX_EVENTS_PER_RUN   above this many events only the summary is published (default 500)
    DIFF_IGNORE_FIELDS   comma-separated fnmatch patterns, added to change_rules.DEFAULT_IGNORED_FIELDS
    CHAT_TOPIC_ARN       optional: SNS topic for chat notifications (high-severity events and summaries)
    ATHENA_WORKGROUP, ATHENA_DATABASE  optional: named in e-mails and chat messages (where to query)
AWS endpoints come from boto3's own configuration (AWS_ENDPOINT_URL for local runs and tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import boto3
from aws_lambda_powertools.metrics import MetricUnit

from kandji_snapshots.diff.events import CHANGE_TYPES
from kandji_snapshots.diff.rules import IGNORE_FIELDS_ENV, parse_ignore_fields
from kandji_snapshots.diff.differ import DEFAULT_MAX_EVENTS_PER_RUN, DifferResult, DifferSettings, SnapshotDiffer
from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.snapshots.layout import snapshot_id_from_manifest_key
from kandji_snapshots.diff.messages import MessageContext
from kandji_snapshots.diff.publisher import ChatPublisher, SnsPublisher
from kandji_snapshots.settings import number_setting, required_setting
from kandji_snapshots.snapshots.storage import S3ObjectStore


class UnexpectedTrigger(KandjiSnapshotsError):
    """The event is not a manifest of our bucket: retrying cannot make it one."""


@dataclass(frozen=True)
class DifferEnvironment:
    bucket: str
    topic_arn: str
    max_events_per_run: int
    ignore_fields: tuple[str, ...]
    chat_topic_arn: str = ""
    message_context: MessageContext = MessageContext()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "DifferEnvironment":
        env = os.environ if env is None else env
        return cls(
            bucket=required_setting(env, "SNAPSHOT_BUCKET", "the S3 bucket for snapshots"),
            topic_arn=required_setting(env, "CHANGES_TOPIC_ARN", "the SNS topic for change events"),
            max_events_per_run=int(number_setting(env, "MAX_EVENTS_PER_RUN", DEFAULT_MAX_EVENTS_PER_RUN,
                                                  minimum=0, maximum=1_000_000)),
            ignore_fields=parse_ignore_fields(env.get(IGNORE_FIELDS_ENV)),
            chat_topic_arn=(env.get("CHAT_TOPIC_ARN") or "").strip(),
            message_context=message_context_from_env(env),
        )


def build_differ(env: DifferEnvironment) -> SnapshotDiffer:
    store = S3ObjectStore(boto3.client("s3"), env.bucket)
    sns = boto3.client("sns")
    publisher = SnsPublisher(sns, env.topic_arn)
    if env.chat_topic_arn:
        publisher = ChatPublisher(publisher, SnsPublisher(sns, env.chat_topic_arn), env.message_context)
    settings = DifferSettings(max_events_per_run=env.max_events_per_run, ignore_fields=env.ignore_fields,
                              message_context=env.message_context)
    return SnapshotDiffer(store, publisher, settings=settings)


def message_context_from_env(env: Mapping[str, str]) -> MessageContext:
    return MessageContext(athena_workgroup=(env.get("ATHENA_WORKGROUP") or "").strip(),
                          athena_database=(env.get("ATHENA_DATABASE") or "").strip())


def snapshot_id_from_trigger(bucket: str | None, key: str | None, expected_bucket: str) -> str:
    """The snapshot id of an S3 "Object Created" event for a manifest of our bucket, or a clear error."""
    if bucket != expected_bucket:
        raise UnexpectedTrigger(
            f"The event is for bucket {bucket!r}, but this differ diffs snapshots in {expected_bucket!r} "
            "(SNAPSHOT_BUCKET). Check the EventBridge rule's bucket filter.")
    for candidate in (key or "", unquote(key or "")):  # S3 notifications may URL-encode keys (`dt%3D`)
        snapshot_id = snapshot_id_from_manifest_key(candidate)
        if snapshot_id:
            return snapshot_id
    raise UnexpectedTrigger(
        f"s3://{bucket}/{key} is not a snapshot manifest (snapshots/manifests/dt=YYYY-MM-DD/<snapshot_id>/"
        "manifest.json). Check the EventBridge rule's key filter.")


def record_run(metrics: Any, result: DifferResult) -> None:
    """EMF metrics of one run: events by type, high-severity count, published count, duration."""
    metrics.add_metric(name="PublishedMessages", unit=MetricUnit.Count, value=result.published_messages)
    metrics.add_metric(name="DiffDuration", unit=MetricUnit.Seconds, value=result.duration_seconds)
    if result.already_done:  # a redelivered trigger: its events were counted the first time
        return
    for change_type in CHANGE_TYPES:
        name = "".join(part.title() for part in change_type.split("_"))
        metrics.add_metric(name=f"Events{name}", unit=MetricUnit.Count,
                           value=result.counts_by_change_type.get(change_type, 0))
    metrics.add_metric(name="ChangeEvents", unit=MetricUnit.Count, value=result.event_count)
    metrics.add_metric(name="HighSeverityEvents", unit=MetricUnit.Count,
                       value=result.counts_by_severity.get("high", 0))
    metrics.add_metric(name="SuppressedRuns", unit=MetricUnit.Count, value=int(result.suppressed))
