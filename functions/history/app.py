"""History copy Lambda (EventBridge Scheduler, every hour): Athena copies each committed snapshot into the
Parquet history tables, once. {"since": "YYYY-MM-DD"} backfills from that day on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from kandji_snapshots.history.runtime import run_history_copy

if TYPE_CHECKING:  # type hints only: not imported at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
copy_config_to_registered_loggers(source_logger=logger, include={"kandji_snapshots"})


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    result = run_history_copy(event, remaining_seconds=context.get_remaining_time_in_millis() / 1000)
    logger.info("history copy done", extra=result)
    return result
