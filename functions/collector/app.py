"""Collector Lambda: one complete snapshot of the Kandji fleet per scheduled run."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from kandji_snapshots.collect.runtime import run_collection

logger = Logger()
metrics = Metrics()
tracer = Tracer()
copy_config_to_registered_loggers(source_logger=logger, include={"kandji_snapshots"})  # domain logs as JSON too


@logger.inject_lambda_context(correlation_id_path="scheduled_time", clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    scheduled_time = (event or {}).get("scheduled_time")
    return run_collection(scheduled_time, context.get_remaining_time_in_millis() / 1000, metrics)
