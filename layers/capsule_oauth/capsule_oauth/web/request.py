"""What the HTTP handlers share: reading the API Gateway event, and never raising."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from capsule_oauth.errors import AuthorizationFailed, ConfigError
from capsule_oauth.observability import count_by, logger
from capsule_oauth.web import pages

Handler = Callable[[APIGatewayProxyEventV2], dict[str, Any]]


def origin(request: APIGatewayProxyEventV2) -> tuple[str, str]:
    """(scheme, host) this request reached us on, as API Gateway saw it."""
    headers = request.headers
    scheme = (headers.get("x-forwarded-proto") or "https").split(",")[0].strip().lower()
    return scheme, request.request_context.domain_name


def cookie(request: APIGatewayProxyEventV2, name: str) -> str | None:
    for pair in request.cookies or []:
        key, _, value = pair.partition("=")
        if key.strip() == name:
            return value.strip()
    return None


def query(request: APIGatewayProxyEventV2) -> dict[str, str]:
    """Query parameters (HTTP API joins a repeated one with commas, which no valid value has)."""
    return dict(request.query_string_parameters or {})


def never_raises(flow: str) -> Callable[[Handler], Callable[[dict[str, Any]], dict[str, Any]]]:
    """Turn a deployment fault into a 503 page and any other crash into a 500 page."""

    def decorate(handler: Handler) -> Callable[[dict[str, Any]], dict[str, Any]]:
        @functools.wraps(handler)
        def run(event: dict[str, Any]) -> dict[str, Any]:
            try:
                return handler(APIGatewayProxyEventV2(event))
            except ConfigError as error:
                logger.error("Connector is not configured", extra={"problem": str(error)})
                count_by("AuthorizationFailed", "reason", "NotConfigured")
                return pages.refused(
                    AuthorizationFailed(503, "NotConfigured", retry_after=300), retry_url=None
                )
            except Exception:
                logger.exception(f"{flow} crashed")
                count_by("AuthorizationFailed", "reason", "InternalError")
                return pages.refused(AuthorizationFailed(500, "InternalError"), retry_url="start")

        return run

    return decorate
