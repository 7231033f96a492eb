"""What the HTTP handlers share: reading the API Gateway event, and never raising."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from botocore.exceptions import BotoCoreError, ClientError

from capsule_oauth.errors import AuthorizationFailed, ConfigError
from capsule_oauth.observability import count_by, logger
from capsule_oauth.web import pages

Handler = Callable[[APIGatewayProxyEventV2], dict[str, Any]]
AWS_RETRY_AFTER = 5  # seconds: DynamoDB or KMS throttled or briefly out


# The local gateway serves plain http and says so in this header; API Gateway is https only,
# and there a client's own X-Forwarded-Proto must not make us build http:// URLs.
LOCAL_GATEWAY_ENV = "CAPSULE_CONNECTOR_LOCAL_GATEWAY"


def origin(request: APIGatewayProxyEventV2) -> tuple[str, str]:
    """(scheme, host) this request reached us on, as API Gateway saw it."""
    scheme = "https"
    if os.environ.get(LOCAL_GATEWAY_ENV) == "true":
        forwarded = request.headers.get("x-forwarded-proto") or "https"
        scheme = forwarded.split(",")[0].strip().lower()
    return scheme, request.request_context.domain_name


# What API Gateway puts in requestContext.domainName: a host name, or host:port locally.
_HOST = re.compile(r"^[A-Za-z0-9.\[\]:-]{1,300}$")


def is_text(value: object) -> bool:
    """A string that survives UTF-8 (a lone surrogate does not)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def well_formed(event: object) -> bool:
    """Whether ``event`` has the shape of an HTTP API payload 2.0 request."""
    if not isinstance(event, dict):
        return False
    context = event.get("requestContext")
    if not isinstance(context, dict):
        return False
    domain = context.get("domainName")
    if not isinstance(domain, str) or not _HOST.fullmatch(domain):
        return False
    query = event.get("queryStringParameters")
    if query is not None and not (
        isinstance(query, dict) and all(is_text(k) and is_text(v) for k, v in query.items())
    ):
        return False
    headers = event.get("headers")
    if headers is not None and not (
        isinstance(headers, dict) and all(is_text(k) and is_text(v) for k, v in headers.items())
    ):
        return False
    cookies = event.get("cookies")
    return cookies is None or (isinstance(cookies, list) and all(is_text(c) for c in cookies))


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
    """Turn a deployment or AWS fault into a 503 page and any other crash into a 500 page."""

    def decorate(handler: Handler) -> Callable[[dict[str, Any]], dict[str, Any]]:
        @functools.wraps(handler)
        def run(event: dict[str, Any]) -> dict[str, Any]:
            if not well_formed(event):
                count_by("AuthorizationFailed", "reason", "MalformedRequest")
                return pages.refused(AuthorizationFailed(400, "MalformedRequest"), retry_url=None)
            try:
                return handler(APIGatewayProxyEventV2(event))
            except ConfigError as error:
                logger.error("Connector is not configured", extra={"problem": str(error)})
                count_by("AuthorizationFailed", "reason", "NotConfigured")
                return pages.refused(
                    AuthorizationFailed(503, "NotConfigured", retry_after=300), retry_url=None
                )
            except (ClientError, BotoCoreError) as fault:
                logger.warning(f"{flow}: AWS fault", extra={"error": type(fault).__name__})
                count_by("AuthorizationFailed", "reason", "StorageUnavailable")
                return pages.refused(
                    AuthorizationFailed(503, "StorageUnavailable", retry_after=AWS_RETRY_AFTER),
                    retry_url=None,
                )
            except Exception:
                logger.exception(f"{flow} crashed")
                count_by("AuthorizationFailed", "reason", "InternalError")
                return pages.refused(AuthorizationFailed(500, "InternalError"), retry_url=None)

        return run

    return decorate
