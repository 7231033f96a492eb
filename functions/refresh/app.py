"""Scheduled: discard unconfirmed pending connections, refresh every connection whose tokens
are due, then check the REST hooks that are due a check, within the time budget."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth.config import settings
from capsule_oauth.flows.confirm import discard_expired_pending
from capsule_oauth.flows.hooks import check_due
from capsule_oauth.flows.refresh import refresh_due
from capsule_oauth.observability import logger, metrics


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    configured = settings()
    # Unconfirmed connections first: their grants must not outlive their confirm window.
    discarded = discard_expired_pending(
        configured, remaining_ms=context.get_remaining_time_in_millis
    )
    report = refresh_due(
        configured,
        remaining_ms=context.get_remaining_time_in_millis,
        run_id=context.aws_request_id,
    )
    answer = {**report.as_dict(), "pending_discarded": discarded}
    # Then the daily REST hook check, in the time that is left (with hooks off, it deletes
    # the hooks still kept, if any).
    hooks = check_due(configured, remaining_ms=context.get_remaining_time_in_millis)
    if configured.hook_events or hooks:
        answer["hooks"] = hooks
    return answer
