"""POST /connections/{connection_id}/access-token (AWS_IAM): a valid access token for the
app's backend, refreshed on demand under the same lease as the scheduled refresh.

The only answer of the connector that carries a token; it is never logged.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth.config import settings
from capsule_oauth.errors import ConnectionNotFound, ReauthorizationRequired, TokenUnavailable
from capsule_oauth.observability import count, logger, metrics
from capsule_oauth.store.records import PENDING
from capsule_oauth.tokens import current_token
from capsule_oauth.web import json_api


@json_api.json_route
def access_token(event: dict[str, Any]) -> dict[str, Any]:
    connection_id = json_api.connection_id(event)
    try:
        # Read the status and version on every call: a disconnect or a reconnect that has
        # answered must show in this container at once, not after TokenCacheSeconds.
        token = current_token(connection_id, recheck=True)
    except ConnectionNotFound:
        return json_api.error(404, "not_found", "No connection has that id.")
    except ReauthorizationRequired as needed:
        if needed.status == PENDING:
            return json_api.error(
                409,
                "confirmation_required",
                "The connection is pending: the app must confirm its capsule_result first"
                " (POST /connect-sessions/confirm).",
            )
        return json_api.error(
            409,
            "reauthorization_required",
            f"The connection is {needed.status}: the person must connect Capsule again.",
        )
    except TokenUnavailable as unavailable:
        count("AccessTokenUnavailable")
        return json_api.error(
            503,
            "token_unavailable",
            "No valid token can be had from Capsule right now; try again later.",
            retry_after=unavailable.retry_after,
        )
    return json_api.answer(
        200,
        {
            "access_token": token.value,
            "token_type": "Bearer",
            "expires_at": token.expires_at,
            "api_base_url": f"{settings().capsule_base_url}/api/v2",
        },
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return access_token(event)
