"""Scheduled: discard unconfirmed pending connections, then refresh every connection whose
tokens are due, within the time budget."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth.config import settings
from capsule_oauth.flows.confirm import discard_expired_pending
from capsule_oauth.flows.refresh import refresh_due
from capsule_oauth.observability import logger, metrics


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Unconfirmed connections first: their grants must not outlive their confirm window.
    discarded = discard_expired_pending(
        settings(), remaining_ms=context.get_remaining_time_in_millis
    )
    report = refresh_due(
        settings(),
        remaining_ms=context.get_remaining_time_in_millis,
        run_id=context.aws_request_id,
    )
    return {**report.as_dict(), "pending_discarded": discarded}
