"""JSON answers for the routes the app's backend calls (AWS_IAM): never cached, errors alike.

``json_route`` wraps a management route's handler: a malformed event is a 400, a missing or
malformed connection id a 400, an AWS fault a 503 with Retry-After, a missing setting a 503;
every call is logged with the caller's IAM identity and the connection id, never a token.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from capsule_oauth.errors import ConfigError
from capsule_oauth.observability import count_by, logger
from capsule_oauth.web import request

_HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
AWS_RETRY_AFTER_SECONDS = 2

# Connection ids are "<subdomain>:<user id>" or "cc_<hex>"; anything else is not one.
_CONNECTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$")


def answer(
    status: int, body: object | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {**_HEADERS, **(headers or {})},
        "body": "" if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def error(
    status: int, code: str, message: str, *, retry_after: int | None = None
) -> dict[str, Any]:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return answer(status, {"error": code, "message": message}, headers)


def caller(event: dict[str, Any]) -> str | None:
    """The IAM identity API Gateway verified (AWS_IAM routes), for the log."""
    iam = event.get("requestContext", {}).get("authorizer", {}).get("iam", {})
    arn = iam.get("userArn") if isinstance(iam, dict) else None
    return arn if isinstance(arn, str) else None


class BadRequest(Exception):
    """A 400 with this error code and sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def connection_id(event: dict[str, Any]) -> str:
    """The ``{connection_id}`` of the route's path, or a BadRequest."""
    parameters = event.get("pathParameters")
    value = parameters.get("connection_id") if isinstance(parameters, dict) else None
    if not isinstance(value, str) or not _CONNECTION_ID.fullmatch(value):
        raise BadRequest("invalid_request", "The path does not name a connection id.")
    return value


def query(event: dict[str, Any], name: str) -> str | None:
    parameters = event.get("queryStringParameters")
    value = parameters.get(name) if isinstance(parameters, dict) else None
    return value if isinstance(value, str) else None


Route = Callable[[dict[str, Any]], dict[str, Any]]


def json_route(handler: Route) -> Route:
    """Run a management route: refuse malformed events, log who called, map faults."""

    @functools.wraps(handler)
    def run(event: dict[str, Any]) -> dict[str, Any]:
        if not request.well_formed(event):
            return error(400, "invalid_request", "This is not an HTTP API request.")
        route = event.get("routeKey")
        parameters = event.get("pathParameters")
        logger.info(
            "Management call",
            extra={
                "caller": caller(event),
                "route": route if isinstance(route, str) else None,
                "connection_id": (
                    parameters.get("connection_id") if isinstance(parameters, dict) else None
                ),
            },
        )
        try:
            return handler(event)
        except BadRequest as refused:
            return error(400, refused.code, refused.message)
        except ConfigError as problem:
            logger.error("Connector is not configured", extra={"problem": str(problem)})
            return error(503, "not_configured", "The connector is not configured.")
        except (ClientError, BotoCoreError) as fault:
            count_by("ManagementCallFailed", "error_class", type(fault).__name__)
            logger.warning("AWS fault", extra={"error": type(fault).__name__})
            return error(
                503,
                "unavailable",
                "AWS did not answer as expected; try again shortly.",
                retry_after=AWS_RETRY_AFTER_SECONDS,
            )

    return run
