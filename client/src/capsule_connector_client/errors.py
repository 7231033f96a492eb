"""One exception per error code of the connector's API, each carrying the API's message.

Every answer of the API that is not a success raises a ``ConnectorError``: the subclass
named for its ``error`` code where there is one, ``AccessDenied`` when API Gateway refused
the signature or the caller's permissions, ``ConnectorError`` itself for anything else.
``retry_after`` holds the seconds of a ``Retry-After`` header (503, 429), else None.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """An answer of the connector that is not a success."""

    code: str = "error"

    def __init__(
        self, message: str, *, status: int, code: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or type(self).code
        self.retry_after = retry_after

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(status={self.status}, code={self.code!r}, message={self.message!r})"


class AccessDenied(ConnectorError):
    """403 from API Gateway: the request is not signed, or the caller may not invoke the route."""

    code = "access_denied"


class InvalidRequest(ConnectorError):
    code = "invalid_request"


class InvalidJson(ConnectorError):
    """400: the body is not well-formed JSON."""

    code = "invalid_json"


class InvalidPath(ConnectorError):
    """400: the Capsule path given to the proxy is not one it forwards."""

    code = "invalid_path"


class RequestTooLarge(ConnectorError):
    """413: the body is larger than the API accepts."""

    code = "request_too_large"


class UnsupportedMediaType(ConnectorError):
    """415: the body is not sent as application/json."""

    code = "unsupported_media_type"


class MethodNotAllowed(ConnectorError):
    """405: the proxy forwards only the methods it names."""

    code = "method_not_allowed"


class InvalidOwner(ConnectorError):
    code = "invalid_owner"


class InvalidReturnUrl(ConnectorError):
    code = "invalid_return_url"


class ReturnUrlRequired(ConnectorError):
    """400: a connect session needs a return URL."""

    code = "return_url_required"


class NotFound(ConnectorError):
    """No connection has that id (or no reconnect connection of that owner)."""

    code = "not_found"


class ResultNotFound(ConnectorError):
    """The confirmation result is unknown, used or expired."""

    code = "result_not_found"


class Forbidden(ConnectorError):
    """The connection named for a reconnect belongs to another owner."""

    code = "forbidden"


class OwnerMismatch(ConnectorError):
    """The confirmation result belongs to another owner."""

    code = "owner_mismatch"


class CallerNotAllowed(ConnectorError):
    code = "caller_not_allowed"


class ReauthorizationRequired(ConnectorError):
    """The person must connect again (Capsule refused the refresh token, or disconnected)."""

    code = "reauthorization_required"


class ConfirmationRequired(ConnectorError):
    """The connection waits for the app to confirm it (POST /connect-sessions/confirm)."""

    code = "confirmation_required"


class ConnectionChanged(ConnectorError):
    code = "connection_changed"


class RateLimited(ConnectorError):
    """429: Capsule's rate limit; ``retry_after`` says when to call again."""

    code = "rate_limited"


class TokenUnavailable(ConnectorError):
    """503: no valid token right now (Capsule unreachable); try again after ``retry_after``."""

    code = "token_unavailable"


class ConnectionBusy(ConnectorError):
    """503: a refresh holds the connection; try again after ``retry_after``."""

    code = "connection_busy"


class Unavailable(ConnectorError):
    """503: AWS failed the connector for a moment; try again after ``retry_after``."""

    code = "unavailable"


class NotConfigured(ConnectorError):
    """503: the connector has no Capsule client credentials yet."""

    code = "not_configured"


class RevocationFailed(ConnectorError):
    """502: Capsule did not revoke the grant; nothing changed."""

    code = "revocation_failed"


class CapsuleUnavailable(ConnectorError):
    """502: Capsule could not be reached or answered an error of its own."""

    code = "capsule_unavailable"


class CapsuleTimeout(ConnectorError):
    """504: Capsule did not answer in time."""

    code = "capsule_timeout"


class InternalError(ConnectorError):
    """500: the connector failed; try again later."""

    code = "internal_error"


ERRORS: dict[str, type[ConnectorError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        InvalidJson,
        InvalidPath,
        RequestTooLarge,
        UnsupportedMediaType,
        MethodNotAllowed,
        InvalidOwner,
        InvalidReturnUrl,
        ReturnUrlRequired,
        NotFound,
        ResultNotFound,
        Forbidden,
        OwnerMismatch,
        CallerNotAllowed,
        ReauthorizationRequired,
        ConfirmationRequired,
        ConnectionChanged,
        RateLimited,
        TokenUnavailable,
        ConnectionBusy,
        Unavailable,
        NotConfigured,
        RevocationFailed,
        CapsuleUnavailable,
        CapsuleTimeout,
        InternalError,
    )
}
