"""GET /auth/start: send the person to Capsule with a fresh state and PKCE challenge."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth import pages, web
from capsule_oauth.config import settings
from capsule_oauth.observability import count, count_by, logger, metrics
from capsule_oauth.start_flow import InvalidStartRequest, start_authorization


@web.never_raises("Start")
def start(request: APIGatewayProxyEventV2) -> dict[str, Any]:
    scheme, host = web.origin(request)
    try:
        result = start_authorization(
            settings(),
            scheme=scheme,
            host=host,
            return_to=web.query(request).get("return_to"),
        )
    except InvalidStartRequest as error:
        count_by("AuthorizationFailed", "reason", "BadStartRequest")
        return pages.failure(
            400,
            title="This link cannot start a connection",
            message=str(error),
            next_step="Go back to the app and use its Connect Capsule button.",
            retry_url=None,
        )
    count("AuthorizationStarted")
    return pages.redirect(result.authorise_url, cookies=[result.binding_cookie])


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return start(event)
