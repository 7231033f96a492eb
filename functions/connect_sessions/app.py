"""POST /connect-sessions (AWS_IAM): the app's backend asks for a connect link for an owner."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth.config import settings
from capsule_oauth.errors import (
    ConnectionNotFound,
    ConnectionOwnedElsewhere,
    InvalidConnectSessionRequest,
)
from capsule_oauth.flows.sessions import create_connect_session, start_url_for
from capsule_oauth.observability import count, logger, metrics
from capsule_oauth.web import json_api, request


def _answer_refusal(refused: InvalidConnectSessionRequest) -> dict[str, Any]:
    return json_api.error(400, refused.reason, refused.message)


@json_api.json_route(
    errors={
        InvalidConnectSessionRequest: _answer_refusal,
        ConnectionNotFound: lambda _: json_api.error(
            404, "not_found", "No connection has that reconnect_connection_id."
        ),
        ConnectionOwnedElsewhere: lambda _: json_api.error(
            403, "forbidden", "The connection to reconnect belongs to another owner."
        ),
    }
)
def create(event: dict[str, Any]) -> dict[str, Any]:
    wanted = json_api.fields(
        json_api.body(event),
        required=("owner",),
        optional=("return_url", "reconnect_connection_id"),
    )
    owner = str(wanted["owner"])
    scheme, host = request.origin(APIGatewayProxyEventV2(event))
    session = create_connect_session(
        owner,
        wanted["return_url"],
        wanted["reconnect_connection_id"],
        start_url=start_url_for(settings(), origin=f"{scheme}://{host}"),
    )
    count("ConnectSessionCreated")
    logger.info(
        "Connect session created",
        extra={
            "caller": json_api.caller(event),
            "owner": owner,
            "reconnect": bool(wanted["reconnect_connection_id"]),
        },
    )
    return json_api.answer(201, session)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return create(event)
