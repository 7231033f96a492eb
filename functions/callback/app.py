"""GET /auth/callback: consume the state, exchange the code, save the connection."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth import pages, web
from capsule_oauth.callback_flow import AuthorizationFailed, complete_authorization
from capsule_oauth.config import settings
from capsule_oauth.observability import count, count_by, logger, metrics
from capsule_oauth.start_flow import binding_cookie, binding_cookie_name


def _retry_url(return_to: str | None) -> str:
    # Relative to /auth/callback, so it works behind any domain or base path.
    return "start" + (f"?{urlencode({'return_to': return_to})}" if return_to else "")


@web.never_raises("Callback")
def callback(request: APIGatewayProxyEventV2) -> dict[str, Any]:
    params = web.query(request)
    state = params.get("state", "")
    try:
        connected = complete_authorization(
            settings(),
            params=params,
            binding_nonce=web.cookie(request, binding_cookie_name(state)) if state else None,
        )
    except AuthorizationFailed as failure:
        logger.info(
            "Authorization failed", extra={"reason": failure.reason, "status": failure.status}
        )
        count_by("AuthorizationFailed", "reason", failure.reason)
        page = pages.failure(
            failure.status,
            title=failure.title,
            message=failure.message,
            next_step=failure.next_step,
            detail=failure.detail,
            retry_url=_retry_url(failure.return_to),
            retry_after=failure.retry_after,
        )
    else:
        count("ConnectionUpdated" if connected.reconnected else "ConnectionCreated")
        page = pages.connected(
            site_name=connected.site_name,
            user_name=connected.user_name,
            reconnected=connected.reconnected,
            continue_to=connected.return_to,
        )
        # The binding cookie has done its job. (Failures leave it: a forged callback
        # must not be able to cancel a sign-in in progress.)
        page["cookies"] = [binding_cookie(state, "", path=request.raw_path or "/", max_age=0)]
    return page


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return callback(event)
