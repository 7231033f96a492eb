"""JSON answers for the routes the app's backend calls (AWS_IAM): never cached, errors alike.

``json_route`` is the one request/answer path of every JSON route: a malformed event is a
400, a caller outside ManagementCallerArns a 403, a body over the route's cap a 413, a
malformed body or field a 400 (``body`` and ``fields`` raise BadRequest), a race a 409, an
AWS fault a 503 with Retry-After, a missing setting a 503, and anything unforeseen a 500 in
the same JSON shape; every call is logged with the caller's IAM identity and the connection
id, never a token. A route adds its own exceptions with ``errors={Type: answer}``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, overload

from botocore.exceptions import BotoCoreError, ClientError

from capsule_oauth import config, owners
from capsule_oauth.errors import ConfigError, ConnectionChanged
from capsule_oauth.observability import count_by, logger
from capsule_oauth.web import request

_HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
AWS_RETRY_AFTER_SECONDS = 2
MAX_BODY_BYTES = 64 * 1024  # the default cap; a route may declare its own
MAX_BODY_DEPTH = 32  # nesting of arrays and objects no request of ours comes near


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
    context = event.get("requestContext")
    authorizer = context.get("authorizer") if isinstance(context, dict) else None
    iam = authorizer.get("iam") if isinstance(authorizer, dict) else None
    arn = iam.get("userArn") if isinstance(iam, dict) else None
    return arn if isinstance(arn, str) else None


def caller_allowed(arn: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether ``arn`` is one of ``allowed`` (none listed: IAM alone decides). A role's ARN
    also matches its sessions, ``arn:<partition>:sts::<account>:assumed-role/<name>/<session>``
    (which carry the role's name without its path)."""
    if not allowed:
        return True
    if arn is None:
        return False
    if arn in allowed:
        return True
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "sts" or not parts[5].startswith("assumed-role/"):
        return False
    role_name = parts[5].split("/")[1]
    for entry in allowed:
        entry_parts = entry.split(":", 5)
        if (
            len(entry_parts) == 6
            and entry_parts[2] == "iam"
            and (entry_parts[1], entry_parts[4]) == (parts[1], parts[4])
            and entry_parts[5].startswith("role/")
            and entry_parts[5].rsplit("/", 1)[1] == role_name
        ):
            return True
    return False


class BadRequest(Exception):
    """A 400 with this error code and sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _malformed(message: str) -> BadRequest:
    return BadRequest("invalid_request", message)


def connection_id(event: dict[str, Any]) -> str:
    """The ``{connection_id}`` of the route's path, or a BadRequest."""
    parameters = event.get("pathParameters")
    value = parameters.get("connection_id") if isinstance(parameters, dict) else None
    if not owners.is_connection_id(value):
        raise _malformed("The path does not name a connection id.")
    return str(value)


def query(event: dict[str, Any], name: str) -> str | None:
    parameters = event.get("queryStringParameters")
    value = parameters.get(name) if isinstance(parameters, dict) else None
    return value if isinstance(value, str) else None


# --- the request body ------------------------------------------------------------------------


def _body_size(event: dict[str, Any]) -> int:
    """Bytes of the body as the client sent it (base64 decodes to three bytes per four)."""
    raw = event.get("body")
    if not isinstance(raw, str):
        return 0
    if event.get("isBase64Encoded") is True:
        return len(raw) * 3 // 4
    return len(raw.encode("utf-8", "surrogatepass"))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _malformed(f"The body gives the field {json.dumps(key)} twice.")
        found[key] = value
    return found


def _not_a_number(name: str) -> Any:
    raise _malformed(f"The body holds {name}, which JSON does not allow.")


def _check_values(value: object) -> None:
    """Every string is text (no lone surrogate) and nothing nests past MAX_BODY_DEPTH."""
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if not request.is_text(item):
                raise _malformed("The body holds a string that is not valid Unicode.")
        elif isinstance(item, (dict, list)):
            if depth > MAX_BODY_DEPTH:
                raise _malformed(f"The body nests deeper than {MAX_BODY_DEPTH} levels.")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def raw_body(event: dict[str, Any]) -> bytes:
    """The request body's bytes as the client sent them (base64 decoded), b"" for none; a
    BadRequest when it cannot be (routes that pass a body on, not parse it, start here)."""
    raw = event.get("body")
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise _malformed("The body must be text.")
    if event.get("isBase64Encoded") is True:
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise _malformed("The body is marked base64 but does not decode.") from None
    try:
        return raw.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no client sent that as UTF-8
        raise _malformed("The body is not UTF-8 text.") from None


def body(event: dict[str, Any]) -> dict[str, Any]:
    """The request's JSON object body, or a BadRequest saying what is wrong with it.

    Base64 and UTF-8 must decode, the JSON must parse without repeated fields, NaN or
    Infinity, strings must be valid Unicode and nesting stays within MAX_BODY_DEPTH.
    (json_route has already refused a body over the route's size cap.)
    """
    data = raw_body(event)
    if not data:
        raise _malformed("The body must be a JSON object; it is empty.")
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("The body is not UTF-8 text.") from None
    try:
        parsed = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_not_a_number)
    except RecursionError:
        raise _malformed(f"The body nests deeper than {MAX_BODY_DEPTH} levels.") from None
    except ValueError as problem:
        if isinstance(problem, json.JSONDecodeError):
            raise _malformed(
                f"The body is not valid JSON ({problem.msg} at character {problem.pos})."
            ) from None
        raise _malformed("The body is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise _malformed("The body must be a JSON object.")
    _check_values(parsed)
    return parsed


def fields(
    received: dict[str, Any], *, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> dict[str, str | None]:
    """The string fields of a body: each of ``required`` present, each of ``optional`` a
    string or absent (null counts as absent), and no field besides; else a BadRequest."""
    unknown = sorted(set(received) - set(required) - set(optional))
    if unknown:
        raise _malformed(f"Unknown field(s): {', '.join(json.dumps(name) for name in unknown)}.")
    values: dict[str, str | None] = {}
    for name in (*required, *optional):
        value = received.get(name)
        if value is None and name in required:
            raise _malformed(f"{name} is required.")
        if value is not None and not isinstance(value, str):
            raise _malformed(f"{name} must be a string.")
        values[name] = value
    return values


# --- the route ------------------------------------------------------------------------------

Route = Callable[[dict[str, Any]], dict[str, Any]]
# How a route answers an exception of its own: {ConnectionNotFound: lambda e: error(404, ...)}
ErrorAnswers = Mapping[type[BaseException], Callable[[Any], dict[str, Any]]]


def _connection_changed(_: ConnectionChanged) -> dict[str, Any]:
    return error(
        409,
        "connection_changed",
        "The connection changed while this request was handled (it was reconnected);"
        " nothing was changed by this request. Read the connection and try again.",
    )


def _not_configured(problem: ConfigError) -> dict[str, Any]:
    logger.error("Connector is not configured", extra={"problem": str(problem)})
    return error(503, "not_configured", "The connector is not configured.")


def _aws_fault(fault: ClientError | BotoCoreError) -> dict[str, Any]:
    count_by("ManagementCallFailed", "error_class", type(fault).__name__)
    code = fault.response.get("Error", {}).get("Code") if isinstance(fault, ClientError) else None
    logger.warning("AWS fault", extra={"error": type(fault).__name__, "code": code})
    return error(
        503,
        "unavailable",
        "AWS did not answer as expected; try again shortly.",
        retry_after=AWS_RETRY_AFTER_SECONDS,
    )


# What every JSON route answers after the route's own ``errors``.
_COMMON_ERRORS: ErrorAnswers = {
    BadRequest: lambda refused: error(400, refused.code, refused.message),
    ConnectionChanged: _connection_changed,
    ConfigError: _not_configured,
    ClientError: _aws_fault,
    BotoCoreError: _aws_fault,
}


def _refusal(event: dict[str, Any], iam: bool, max_body_bytes: int) -> dict[str, Any] | None:
    """The answer to a request refused before its route runs, or None."""
    if iam and not caller_allowed(caller(event), config.settings().management_caller_arns):
        count_by("ManagementCallRefused", "reason", "CallerNotAllowed")
        logger.warning("Caller not in ManagementCallerArns", extra={"caller": caller(event)})
        return error(
            403,
            "caller_not_allowed",
            "This IAM identity may not call the management API: it is not in the stack's"
            " ManagementCallerArns.",
        )
    if _body_size(event) > max_body_bytes:
        mib, kib = divmod(max_body_bytes, 1024 * 1024)
        cap = f"{mib} MiB" if not kib else f"{max_body_bytes // 1024} KiB"
        return error(413, "request_too_large", f"The request body is larger than {cap}.")
    return None


def _loggable(value: object) -> str | None:
    """A path parameter for the log: a string, cut short (a client may send kilobytes)."""
    return value[:300] if isinstance(value, str) and request.is_text(value) else None


@overload
def json_route(handler: Route, /) -> Route: ...


@overload
def json_route(
    *, max_body_bytes: int = MAX_BODY_BYTES, errors: ErrorAnswers | None = None, iam: bool = True
) -> Callable[[Route], Route]: ...


def json_route(
    handler: Route | None = None,
    /,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    errors: ErrorAnswers | None = None,
    iam: bool = True,
) -> Route | Callable[[Route], Route]:
    """Run a JSON route: refuse malformed events and callers not allowed, cap the body, log
    who called, map faults. ``@json_route`` or ``@json_route(max_body_bytes=..., errors=...)``;
    ``iam=False`` only for a route without the AWS_IAM authorizer."""
    own = dict(errors or {})
    answers = [*own.items(), *((k, v) for k, v in _COMMON_ERRORS.items() if k not in own)]

    def decorate(route: Route) -> Route:
        @functools.wraps(route)
        def run(event: dict[str, Any]) -> dict[str, Any]:
            if not request.well_formed(event):
                return error(400, "invalid_request", "This is not an HTTP API request.")
            route_key = event.get("routeKey")
            parameters = event.get("pathParameters")
            logger.info(
                "Management call",
                extra={
                    "caller": caller(event),
                    "route": route_key if isinstance(route_key, str) else None,
                    "connection_id": _loggable(
                        parameters.get("connection_id") if isinstance(parameters, dict) else None
                    ),
                },
            )
            try:
                refused = _refusal(event, iam, max_body_bytes)
                return refused if refused is not None else route(event)
            except Exception as problem:
                for kind, answer_for in answers:
                    if isinstance(problem, kind):
                        return answer_for(problem)
                logger.exception("Route crashed", extra={"error": type(problem).__name__})
                count_by("ManagementCallFailed", "error_class", "InternalError")
                return error(500, "internal_error", "The connector failed; try again later.")

        return run

    return decorate if handler is None else decorate(handler)
