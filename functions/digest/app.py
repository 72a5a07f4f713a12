"""Daily digest Lambda (EventBridge Scheduler, once a day): publish one summary of a day's changes.

The event may name the day: {"day": "YYYY-MM-DD"} (UTC); without it, yesterday is digested.
A day's digest is sent once; {"day": "YYYY-MM-DD", "force": true} sends it again.
"""

import os
from datetime import datetime, timezone

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from kandji_snapshots.diff.digest import DigestRequest, publish_daily_digest
from kandji_snapshots.diff.publisher import SnsPublisher
from kandji_snapshots.diff.runtime import message_context_from_env
from kandji_snapshots.settings import required_setting
from kandji_snapshots.snapshots.storage import S3ObjectStore

logger = Logger()
copy_config_to_registered_loggers(source_logger=logger, include={"kandji_snapshots"})


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    env = os.environ
    now = datetime.now(timezone.utc)
    request = DigestRequest.from_event(event, now)
    store = S3ObjectStore(boto3.client("s3"), required_setting(env, "SNAPSHOT_BUCKET", "the S3 bucket for snapshots"))
    publisher = SnsPublisher(boto3.client("sns"),
                             required_setting(env, "DIGEST_TOPIC_ARN", "the SNS topic for the daily digest"))
    # A claim on the day lasts as long as this invocation can run.
    return publish_daily_digest(store, publisher, request, message_context_from_env(env), now=now,
                                lease_seconds=context.get_remaining_time_in_millis() / 1000)
