"""GET /connections?owner= and GET /connections/{connection_id} (AWS_IAM): what the app's
backend reads about its owners' connections. Never a token."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth.errors import ConnectionNotFound, InvalidOwner
from capsule_oauth.flows.connections import get_connection, list_connections
from capsule_oauth.observability import logger, metrics
from capsule_oauth.web import json_api

LIST = "GET /connections"
ONE = "GET /connections/{connection_id}"


@json_api.json_route
def read(event: dict[str, Any]) -> dict[str, Any]:
    route = event.get("routeKey")
    if route == LIST:
        owner = json_api.query(event, "owner")
        if owner is None:
            return json_api.error(400, "invalid_owner", "The owner query parameter is required.")
        try:
            return json_api.answer(200, {"connections": list_connections(owner)})
        except InvalidOwner as refused:
            return json_api.error(400, "invalid_owner", f"{refused}.")
    if route == ONE:
        connection_id = json_api.connection_id(event)
        try:
            return json_api.answer(200, get_connection(connection_id))
        except ConnectionNotFound:
            return json_api.error(404, "not_found", "No connection has that id.")
    return json_api.error(404, "not_found", "No such route.")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return read(event)
