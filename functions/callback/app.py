"""GET /auth/callback: consume the state, exchange the code, save the connection."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth.config import settings
from capsule_oauth.errors import AuthorizationFailed
from capsule_oauth.flows.callback import complete_authorization
from capsule_oauth.observability import count, count_by, logger, metrics
from capsule_oauth.web import pages, request
from capsule_oauth.web.binding import binding_cookie, binding_cookie_name
from capsule_oauth.web.return_urls import with_query


def _retry_url(return_to: str | None) -> str:
    # Relative to /auth/callback, so it works behind any domain or base path.
    return "start" + (f"?{urlencode({'return_to': return_to})}" if return_to else "")


def _back_to_app(return_url: str, **status: str) -> dict[str, Any]:
    """303 to the app's return URL with what happened added to its query."""
    return pages.response(
        303,
        headers={
            "Location": with_query(return_url, {f"capsule_{k}": v for k, v in status.items()})
        },
    )


def _app_host(return_url: str) -> str:
    return urlsplit(return_url).hostname or "the app"


@request.never_raises("Callback")
def callback(event: APIGatewayProxyEventV2) -> dict[str, Any]:
    params = request.query(event)
    state = params.get("state", "")
    try:
        connected = complete_authorization(
            settings(),
            params=params,
            binding_nonce=request.cookie(event, binding_cookie_name(state)) if state else None,
        )
    except AuthorizationFailed as failure:
        logger.info(
            "Authorization failed", extra={"reason": failure.reason, "status": failure.status}
        )
        count_by("AuthorizationFailed", "reason", failure.reason)
        if failure.reason == "AccessDenied" and failure.return_url:
            page = _back_to_app(failure.return_url, status="denied")
            page["cookies"] = [binding_cookie(state, "", path=event.raw_path or "/", max_age=0)]
            return page
        back = None
        if failure.return_url:
            link = with_query(
                failure.return_url, {"capsule_status": "error", "capsule_error": failure.reason}
            )
            back = (link, f"Back to {_app_host(failure.return_url)}")
        return pages.refused(failure, retry_url=_retry_url(failure.return_to), back=back)
    count("ConnectionUpdated" if connected.reconnected else "ConnectionCreated")
    if connected.return_url:
        status = {
            "connection_id": connected.connection_id,
            "status": "reconnected" if connected.reconnected else "connected",
        }
        if connected.result:
            status["result"] = connected.result
        page = _back_to_app(connected.return_url, **status)
    else:
        page = pages.connected(
            site_name=connected.site_name,
            user_name=connected.user_name,
            reconnected=connected.reconnected,
            continue_to=connected.return_to,
        )
    # The binding cookie has done its job; clear it where it was set. (Failures leave it:
    # a forged callback must not be able to cancel a sign-in in progress.)
    page["cookies"] = [binding_cookie(state, "", path=connected.cookie_path, max_age=0)]
    return page


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return callback(event)
