"""What the HTTP handlers share: reading the API Gateway event, and never raising."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from capsule_oauth import pages
from capsule_oauth.config import ConfigError
from capsule_oauth.observability import count_by, logger

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
                return pages.failure(
                    503,
                    title="This app is not set up yet",
                    message="The connection to Capsule is not configured on the server.",
                    next_step="Please try again later or tell the app's owner.",
                    retry_url=None,
                    retry_after=300,
                )
            except Exception:
                logger.exception(f"{flow} crashed")
                count_by("AuthorizationFailed", "reason", "InternalError")
                return pages.failure(
                    500,
                    title="Something went wrong",
                    message="The app could not finish connecting your Capsule account;"
                    " nothing was saved.",
                    next_step="Please try again in a minute.",
                    retry_url="start",
                )

        return run

    return decorate
