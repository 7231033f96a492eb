"""GET /auth/start: send the person to Capsule with a fresh state and PKCE challenge."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth.config import settings
from capsule_oauth.errors import InvalidStartRequest
from capsule_oauth.flows.start import moved_start, start_authorization
from capsule_oauth.observability import count, count_by, logger, metrics
from capsule_oauth.web import pages, request
from capsule_oauth.web.return_urls import with_query


@request.never_raises("Start")
def start(event: APIGatewayProxyEventV2) -> dict[str, Any]:
    scheme, host = request.origin(event)
    moved = moved_start(settings(), host=host, raw_query=event.raw_query_string or "")
    if moved:
        return pages.redirect(moved)
    params = request.query(event)
    try:
        result = start_authorization(
            settings(),
            scheme=scheme,
            host=host,
            return_to=params.get("return_to"),
            session=params.get("session"),
        )
    except InvalidStartRequest as refusal:
        # One metric label for every refused start; the page says which problem it was.
        count_by("AuthorizationFailed", "reason", "BadStartRequest")
        back = None
        if refusal.return_url:  # the session's: the way back to the app that made the link
            link = with_query(
                refusal.return_url, {"capsule_status": "error", "capsule_error": refusal.reason}
            )
            back = (link, f"Back to {urlsplit(refusal.return_url).hostname or 'the app'}")
        return pages.refused(refusal, retry_url=None, back=back)
    count("AuthorizationStarted")
    return pages.redirect(result.authorise_url, cookies=[result.binding_cookie])


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return start(event)
