"""Collector Lambda: one complete snapshot of the Kandji fleet per scheduled run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from kandji_snapshots.collect.runtime import run_collection

if TYPE_CHECKING:  # type hints only: not imported at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()
# Trace the AWS calls and the Kandji requests only: patching every library X-Ray knows imports them all.
tracer = Tracer(patch_modules=("botocore", "requests"))
copy_config_to_registered_loggers(source_logger=logger, include={"kandji_snapshots"})  # domain logs as JSON too


@logger.inject_lambda_context(correlation_id_path="scheduled_time", clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    scheduled_time = (event or {}).get("scheduled_time")
    return run_collection(scheduled_time, context.get_remaining_time_in_millis() / 1000, metrics)
