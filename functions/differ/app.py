"""Differ Lambda: a committed snapshot's manifest appeared; publish what changed since the previous one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from kandji_snapshots.diff.runtime import DifferEnvironment, build_differ, snapshot_id_from_trigger
from kandji_snapshots.metrics import record_diff

if TYPE_CHECKING:  # type hints only: not imported at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()
# Trace the AWS calls only: patching every library X-Ray knows would import requests and more for nothing.
tracer = Tracer(patch_modules=("botocore",))
# The domain's loggers log JSON too. Only those: every other library's logger (botocore logs whole
# request and response bodies at DEBUG) keeps its own level, as in the collector.
copy_config_to_registered_loggers(source_logger=logger, include={"kandji_snapshots"})


@logger.inject_lambda_context(correlation_id_path="detail.object.key", clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    env = DifferEnvironment.from_env()
    # The EventBridge event as a plain dict: Powertools' data_classes package imports every event class.
    detail = (event or {}).get("detail") or {}
    snapshot_id = snapshot_id_from_trigger(detail.get("bucket", {}).get("name"), detail.get("object", {}).get("key"),
                                           env.bucket)
    logger.append_keys(snapshot_id=snapshot_id)
    tracer.put_annotation(key="snapshot_id", value=snapshot_id)
    # Stop between two batches, not in the middle of one, when the Lambda's time runs out.
    result = build_differ(env).run(snapshot_id, time_left=lambda: context.get_remaining_time_in_millis() / 1000)
    record_diff(metrics, result)
    return {"snapshot_id": result.snapshot_id, "previous_snapshot_id": result.previous_snapshot_id,
            "events": result.event_count, "published_messages": result.published_messages,
            "suppressed": result.suppressed, "already_done": result.already_done,
            "changes_uri": result.changes_uri, "superseded_by": result.superseded_by}
