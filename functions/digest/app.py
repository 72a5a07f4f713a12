"""Daily digest Lambda (EventBridge Scheduler, once a day): publish one summary of a day's changes.

The event may name the day: {"day": "YYYY-MM-DD"} (UTC); without it, yesterday is digested.
A day's digest is sent once; {"day": "YYYY-MM-DD", "force": true} sends it again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from kandji_snapshots.diff.digest_runtime import run_digest

if TYPE_CHECKING:  # type hints only: not imported at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
copy_config_to_registered_loggers(source_logger=logger, include={"kandji_snapshots"})


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    # A claim on the day lasts as long as this invocation can run.
    return run_digest(event, lease_seconds=context.get_remaining_time_in_millis() / 1000)
