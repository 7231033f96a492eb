"""POST /connect-sessions (AWS_IAM): the app's backend asks for a connect link for an owner."""

from __future__ import annotations

import base64
import json
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth.config import settings
from capsule_oauth.errors import (
    ConfigError,
    ConnectionNotFound,
    ConnectionOwnedElsewhere,
    InvalidConnectSessionRequest,
)
from capsule_oauth.flows.sessions import create_connect_session, start_url_for
from capsule_oauth.observability import count, logger, metrics
from capsule_oauth.web import json_api, request

_FIELDS = {"owner", "return_url", "reconnect_connection_id"}


def _request(event: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(owner, return_url, reconnect_connection_id) from the JSON body, or a 400's reason."""
    raw = event.get("body") or ""
    try:
        if event.get("isBase64Encoded"):
            raw = base64.b64decode(raw).decode("utf-8")
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise InvalidConnectSessionRequest("invalid_request", "The body must be a JSON object.")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidConnectSessionRequest(
            "invalid_request", f"Unknown field(s): {', '.join(unknown)}."
        )
    owner, return_url = body.get("owner"), body.get("return_url")
    reconnect = body.get("reconnect_connection_id")
    if not isinstance(owner, str) or any(
        value is not None and not isinstance(value, str) for value in (return_url, reconnect)
    ):
        raise InvalidConnectSessionRequest(
            "invalid_request",
            "owner is required; owner, return_url and reconnect_connection_id are strings.",
        )
    return owner, return_url, reconnect


def create(event: dict[str, Any]) -> dict[str, Any]:
    if not request.well_formed(event):
        return json_api.error(400, "invalid_request", "This is not an HTTP API request.")
    scheme, host = request.origin(APIGatewayProxyEventV2(event))
    try:
        owner, return_url, reconnect = _request(event)
        session = create_connect_session(
            owner,
            return_url,
            reconnect,
            start_url=start_url_for(settings(), origin=f"{scheme}://{host}"),
        )
    except InvalidConnectSessionRequest as error:
        return json_api.error(400, error.reason, error.message)
    except ConnectionNotFound:
        return json_api.error(404, "not_found", "No connection has that reconnect_connection_id.")
    except ConnectionOwnedElsewhere:
        return json_api.error(
            403, "forbidden", "The connection to reconnect belongs to another owner."
        )
    except ConfigError as error:
        logger.error("Connector is not configured", extra={"problem": str(error)})
        return json_api.error(503, "not_configured", "The connector is not configured.")
    count("ConnectSessionCreated")
    logger.info(
        "Connect session created",
        extra={"caller": json_api.caller(event), "owner": owner, "reconnect": bool(reconnect)},
    )
    return json_api.answer(201, session)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return create(event)
