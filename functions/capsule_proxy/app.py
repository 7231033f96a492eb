"""ANY /connections/{connection_id}/capsule/{path+} (AWS_IAM): a Capsule API v2 call for the
app's backend, in any language, with the connection's token and within the Capsule user's
budget. Never logs a body, a query value or a token.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any
from urllib.parse import quote

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth.config import settings
from capsule_oauth.errors import (
    CapsuleBadResponse,
    CapsuleRateLimited,
    CapsuleTimeout,
    CapsuleUnavailable,
    ConnectionNotFound,
    ReauthorizationRequired,
    TokenUnavailable,
)
from capsule_oauth.flows import proxy
from capsule_oauth.observability import count, logger, metrics
from capsule_oauth.web import json_api

RATE_LIMITED_FALLBACK_SECONDS = 60


class _Refused(Exception):
    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer["statusCode"])
        self.answer = answer


def _method(event: dict[str, Any]) -> str:
    method = str(event.get("requestContext", {}).get("http", {}).get("method", "")).upper()
    if method not in proxy.METHODS:
        refused = json_api.error(
            405, "method_not_allowed", f"Use one of {', '.join(proxy.METHODS)}."
        )
        refused["headers"]["Allow"] = ", ".join(proxy.METHODS)
        raise _Refused(refused)
    return method


def _raw_capsule_path(event: dict[str, Any]) -> str:
    """The ``{path+}`` as the caller sent it, still percent-encoded: API Gateway decodes
    path parameters, which would turn an encoded slash into a real one."""
    raw_path = event.get("rawPath")
    if isinstance(raw_path, str):
        parts = raw_path.split("/", 4)
        if len(parts) == 5 and parts[1] == "connections" and parts[3] == "capsule":
            return parts[4]
    parameters = event.get("pathParameters")
    value = parameters.get("path") if isinstance(parameters, dict) else None
    return quote(value, safe="/") if isinstance(value, str) else ""


def _query(event: dict[str, Any]) -> str:
    """The query string as API Gateway received it: percent-encoded, printable ASCII."""
    query = event.get("rawQueryString")
    if query is None or query == "":
        return ""
    if not isinstance(query, str) or not query.isascii() or not query.isprintable():
        raise json_api.BadRequest(
            "invalid_request", "The query string must be percent-encoded printable ASCII."
        )
    return query


def _json_body(event: dict[str, Any]) -> bytes | None:
    """The request's JSON body as bytes (None when there is none): at most
    proxy.MAX_BODY_BYTES, declared application/json, and well-formed JSON."""
    body = json_api.raw_body(event)  # json_route has refused a body over the cap
    if not body:
        return None
    headers = event.get("headers")
    headers = headers if isinstance(headers, dict) else {}
    content_type = str(headers.get("content-type", "")).split(";")[0].strip().lower()
    if content_type != "application/json":
        raise _Refused(
            json_api.error(
                415, "unsupported_media_type", "Send the body as Content-Type: application/json."
            )
        )
    try:
        json.loads(body)
    except ValueError:
        raise json_api.BadRequest("invalid_json", "The body is not well-formed JSON.") from None
    return body


def _retry_after(reset_at: float | None) -> int:
    if reset_at is None:
        return RATE_LIMITED_FALLBACK_SECONDS
    return max(1, math.ceil(reset_at - time.time()))


def _failure(error: Exception) -> dict[str, Any]:
    """The answer for a call that could not go through, or that Capsule failed."""
    if isinstance(error, ConnectionNotFound):
        answer = json_api.error(404, "not_found", "No connection has that id.")
    elif isinstance(error, ReauthorizationRequired) and error.status == "pending":
        answer = json_api.error(
            409,
            "confirmation_required",
            "The connection awaits the app's confirmation; confirm it first.",
        )
    elif isinstance(error, ReauthorizationRequired):
        answer = json_api.error(
            409,
            "reauthorization_required",
            f"The connection is {error.status}: the person must connect Capsule again.",
        )
    elif isinstance(error, TokenUnavailable):
        count("AccessTokenUnavailable")
        answer = json_api.error(
            503,
            "token_unavailable",
            "No valid token can be had from Capsule right now; try again later.",
            retry_after=error.retry_after,
        )
    elif isinstance(error, CapsuleRateLimited):
        answer = json_api.error(
            429,
            "rate_limited",
            "This Capsule user's hourly budget of API calls is spent; try again after"
            " Retry-After seconds.",
            retry_after=_retry_after(error.reset_at),
        )
    elif isinstance(error, CapsuleTimeout):
        answer = json_api.error(504, "capsule_timeout", "Capsule did not answer in time.")
    else:
        answer = json_api.error(502, "capsule_unavailable", f"{str(error).rstrip('.')}.")
    return answer


_FAILURES = (
    ConnectionNotFound,
    ReauthorizationRequired,
    TokenUnavailable,
    CapsuleRateLimited,
    CapsuleUnavailable,
    CapsuleBadResponse,
)


@json_api.json_route(max_body_bytes=proxy.MAX_BODY_BYTES)
def call_capsule(event: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    connection_id = json_api.connection_id(event)
    outcome: dict[str, Any] = {"connection_id": connection_id, "caller": json_api.caller(event)}
    try:
        method = _method(event)
        outcome["method"] = method
        try:
            path = proxy.capsule_path(_raw_capsule_path(event))
        except proxy.InvalidCapsulePath as invalid:
            raise json_api.BadRequest("invalid_path", str(invalid)) from None
        outcome["path"] = path  # never the query: its values may be personal data
        body = _json_body(event)
        answer = proxy.forward(
            settings(),
            connection_id,
            method,
            path,
            query=_query(event),
            body=body,
        )
        outcome["capsule_status"] = answer.status
        response = json_api.answer(answer.status, None, answer.headers)
        response["body"] = answer.body.decode("utf-8")
    except _Refused as refused:
        response = refused.answer
    except _FAILURES as error:
        response = _failure(error)
    finally:
        outcome["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    outcome["status"] = response["statusCode"]
    logger.info("Capsule call", extra=outcome)
    return response


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return call_capsule(event)
