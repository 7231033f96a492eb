"""DELETE /connections/{connection_id}[?force=true] (AWS_IAM): revoke the grant at Capsule,
then forget the tokens. Capsule unable to revoke: 502 and nothing changes, unless forced."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth.errors import CapsuleError, ConnectionNotFound, TokenUnavailable
from capsule_oauth.flows.disconnect import disconnect
from capsule_oauth.observability import logger, metrics
from capsule_oauth.web import json_api

_FORCE = {"true": True, "false": False}


@json_api.json_route
def delete(event: dict[str, Any]) -> dict[str, Any]:
    connection_id = json_api.connection_id(event)
    raw_force = json_api.query(event, "force")
    force = _FORCE.get((raw_force or "false").lower())
    if force is None:
        raise json_api.BadRequest("invalid_request", "force must be true or false.")
    try:
        result = disconnect(connection_id, force=force)
    except ConnectionNotFound:
        return json_api.error(404, "not_found", "No connection has that id.")
    except TokenUnavailable as busy:
        return json_api.error(
            503,
            "connection_busy",
            "The connection is being refreshed; try again shortly.",
            retry_after=busy.retry_after,
        )
    except CapsuleError as failure:
        return json_api.error(
            502,
            "revocation_failed",
            f"Capsule did not revoke the grant ({failure.reason}); nothing changed. Try again,"
            " or add ?force=true to forget the tokens here anyway.",
        )
    if result.forgotten and not result.revoked:
        return json_api.answer(200, {"revoked": False, "forgotten": True})
    return json_api.answer(204)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return delete(event)
