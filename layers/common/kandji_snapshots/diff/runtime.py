"""Builds a differ and reads its trigger: the one place that wires the differ's adapters.

Environment:
    SNAPSHOT_BUCKET      the bucket holding snapshots and changes (required)
    CHANGES_TOPIC_ARN    the SNS topic change events go to (required)
    MAX_EVENTS_PER_RUN   above this many events only the summary is published (default 500)
    DIFF_IGNORE_FIELDS   comma-separated fnmatch patterns, added to rules.DEFAULT_IGNORED_FIELDS
    CHAT_TOPIC_ARN       optional: SNS topic for chat notifications (high-severity events and summaries)
    ATHENA_WORKGROUP, ATHENA_DATABASE  optional: named in e-mails and chat messages (where to query)
AWS endpoints come from boto3's own configuration (AWS_ENDPOINT_URL for local runs and tests). The store,
the publisher and the clock are passed in by whoever does not want S3, SNS or the real time (benchmarks,
tests); boto3 is imported only when they are not. The daily digest is wired apart (diff/digest_runtime.py):
each Lambda imports only what it runs, at every cold start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from kandji_snapshots.diff.differ import DEFAULT_MAX_EVENTS_PER_RUN, DifferSettings, SnapshotDiffer
from kandji_snapshots.diff.messages import MessageContext
from kandji_snapshots.diff.publisher import ChatPublisher, Publisher, SnsPublisher
from kandji_snapshots.diff.rules import IGNORE_FIELDS_ENV, parse_ignore_fields
from kandji_snapshots.diff.tenant_changes import SEVERITY_OVERRIDES_ENV, severity_table
from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.settings import number_setting, required_setting, snapshot_bucket
from kandji_snapshots.snapshots.layout import snapshot_id_from_manifest_key
from kandji_snapshots.snapshots.storage import ObjectStore, S3ObjectStore
from kandji_snapshots.snapshots.timeutil import Clock, SystemClock


class UnexpectedTrigger(KandjiSnapshotsError):
    """The event is not a manifest of our bucket: retrying cannot make it one."""


@dataclass(frozen=True)
class DifferEnvironment:
    """Where the differ works (bucket, topics) and how (its DifferSettings, with the differ's own defaults)."""

    bucket: str
    topic_arn: str
    settings: DifferSettings = DifferSettings()
    chat_topic_arn: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "DifferEnvironment":
        env = os.environ if env is None else env
        return cls(
            bucket=snapshot_bucket(env),
            topic_arn=required_setting(env, "CHANGES_TOPIC_ARN", "the SNS topic for change events"),
            settings=DifferSettings(
                max_events_per_run=int(number_setting(env, "MAX_EVENTS_PER_RUN", DEFAULT_MAX_EVENTS_PER_RUN,
                                                      minimum=0, maximum=1_000_000)),
                ignore_fields=parse_ignore_fields(env.get(IGNORE_FIELDS_ENV)),
                message_context=MessageContext.from_env(env),
                tenant_severity=severity_table(env.get(SEVERITY_OVERRIDES_ENV))),
            chat_topic_arn=(env.get("CHAT_TOPIC_ARN") or "").strip(),
        )


def build_differ(env: DifferEnvironment, *, store: ObjectStore | None = None, publisher: Publisher | None = None,
                 clock: Clock = SystemClock) -> SnapshotDiffer:
    """The differ for `env`: S3 and SNS (and the chat topic, when set) unless a store and a publisher are given."""
    if store is None or publisher is None:
        import boto3

        store = store or S3ObjectStore(boto3.client("s3"), env.bucket)
        if publisher is None:
            sns = boto3.client("sns")
            publisher = SnsPublisher(sns, env.topic_arn)
            if env.chat_topic_arn:
                publisher = ChatPublisher(publisher, SnsPublisher(sns, env.chat_topic_arn),
                                          env.settings.message_context)
    return SnapshotDiffer(store, publisher, settings=env.settings, clock=clock)


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
