"""POST /connect-sessions/confirm (AWS_IAM): the app, on its return URL, confirms a new
connection for the user it has signed in on that request.

``{"result": "<capsule_result>", "owner": "<that user>"}`` → 200 the connection (active);
another owner → 403 ``owner_mismatch`` (the pending connection is discarded); unknown,
expired or discarded → 404 ``result_not_found``. The result is never logged.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth import owners
from capsule_oauth.errors import ConnectionNotFound, OwnerMismatch
from capsule_oauth.flows.confirm import confirm_connection
from capsule_oauth.observability import logger, metrics
from capsule_oauth.web import json_api, request


def _body(event: dict[str, Any]) -> tuple[str, str]:
    """(result, owner) from the JSON body, or a BadRequest saying what is wrong."""
    wanted = json_api.fields(json_api.body(event), required=("result", "owner"))
    result, owner = wanted["result"], wanted["owner"]
    if not result:
        raise json_api.BadRequest(
            "invalid_request", "result is required: the capsule_result of the return URL."
        )
    if not owner or not owners.is_valid(owner):
        raise json_api.BadRequest("invalid_owner", f"{owners.RULE}.")
    return result, owner


@json_api.json_route
def confirm(event: dict[str, Any]) -> dict[str, Any]:
    result, owner = _body(event)
    try:
        scheme, host = request.origin(APIGatewayProxyEventV2(event))
        # This API's own address: where the REST hooks of a connection made active deliver.
        connection = confirm_connection(result, owner, api_base_url=f"{scheme}://{host}")
    except OwnerMismatch:
        return json_api.error(
            403,
            "owner_mismatch",
            "This sign-in was started from another user's connect link; its connection was"
            " discarded. Ask the user to connect again from their own account.",
        )
    except ConnectionNotFound:
        return json_api.error(
            404,
            "result_not_found",
            "No connection waits for this result: it is unknown, expired or was discarded.",
        )
    logger.info(
        "Connection confirmed for its owner",
        extra={"caller": json_api.caller(event), "connection_id": connection["connection_id"]},
    )
    return json_api.answer(200, connection)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return confirm(event)
