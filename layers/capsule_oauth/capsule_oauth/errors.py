"""Every exception of the connector, in one place, free of ``requests`` (start never loads it).

``reason`` names the class of failure, short and stable: it is what metrics, logs and the
stored ``last_error`` show, and what the pages look their words up by (web/words.py).
Messages never carry a token, code, verifier or client secret.
"""

from __future__ import annotations

import time
from typing import Any

# --- configuration ---------------------------------------------------------------------------


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message says which and how to fix it."""


class CredentialsNotConfigured(ConfigError):
    """The secret exists but does not hold usable client credentials yet."""


# --- talking to Capsule -----------------------------------------------------------------------


class CapsuleError(Exception):
    """Capsule could not do what was asked."""

    reason = "CapsuleError"


class CapsuleUnavailable(CapsuleError):
    """Connection error or a 5xx: try again later."""

    reason = "Unavailable"


class CapsuleTimeout(CapsuleUnavailable):
    reason = "Timeout"


class CapsuleBadResponse(CapsuleError):
    """Capsule answered with something that is not what the protocol promises."""

    reason = "BadResponse"


class RevocationUnsupported(CapsuleBadResponse):
    """Neither known revocation path exists at Capsule: the grant cannot be revoked from here."""

    reason = "RevocationUnsupported"


class CapsuleRateLimited(CapsuleError):
    """429: wait until ``reset_at`` (epoch seconds) before calling again."""

    reason = "RateLimited"

    def __init__(self, reset_at: float | None) -> None:
        when = (
            f"after {time.strftime('%H:%M:%S', time.gmtime(reset_at))} UTC" if reset_at else "later"
        )
        super().__init__(f"Capsule rate limit reached; try again {when}")
        self.reset_at = reset_at


class OAuthError(CapsuleError):
    """The token endpoint refused the request (RFC 6749 section 5.2)."""

    reason = "OAuthError"

    def __init__(self, error: str, status: int, endpoint: str = "token endpoint") -> None:
        super().__init__(f"Capsule {endpoint} answered {status} {error}")
        self.error = error
        self.status = status


class InvalidGrant(OAuthError):
    """The code or refresh token is expired, used, revoked or was issued to someone else."""

    reason = "InvalidGrant"


class InvalidClient(OAuthError):
    """Capsule does not accept our client id / secret."""

    reason = "InvalidClient"


class CapsuleAPIError(CapsuleError):
    """An API v2 call failed with a 4xx that retrying will not fix."""

    reason = "APIError"

    def __init__(self, status: int, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(f"Capsule API answered {status}: {message}")
        self.status = status
        self.message = message
        self.errors = errors or []


class CapsuleUnauthorized(CapsuleAPIError):
    """401: the access token is invalid, expired or revoked."""

    reason = "Unauthorized"


class HooksNotAllowed(CapsuleAPIError):
    """403 on a REST hook call: only an administrator of the Capsule account may manage hooks."""

    reason = "not_admin"


class HookLimitReached(CapsuleAPIError):
    """Capsule refused a new REST hook: the account already holds its 20 subscriptions."""

    reason = "limit_reached"


# --- stored connections and tokens ------------------------------------------------------------


class ConnectionNotFound(LookupError):
    """No connection with this id: connect the Capsule account first."""


class ReauthorizationRequired(RuntimeError):
    """The person must connect the Capsule account again (revoked, expired or disconnected)."""

    def __init__(self, connection_id: str, status: str) -> None:
        super().__init__(
            f"connection {connection_id} is {status}: the person must connect Capsule again"
        )
        self.connection_id = connection_id
        self.status = status


class TokenUnavailable(RuntimeError):
    """No valid token right now (Capsule unreachable or busy refreshing); try again after
    ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TokenDecryptionError(RuntimeError):
    """Stored tokens could not be decrypted (wrong connection, key or corrupted data)."""

    reason = "TokenDecryptionError"


class LeaseNotAcquired(Exception):
    """Another worker holds the refresh lease of this connection."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id} is being refreshed by another worker")


class InvalidOwner(ValueError):
    """Not an owner id (see owners.RULE)."""


class ConnectionOwnedElsewhere(PermissionError):
    """The connection exists but belongs to another owner."""


class OwnerMismatch(PermissionError):
    """A capsule_result was confirmed for another owner than the one whose link made it: the
    pending connection is discarded (its grant revoked) and the result is dead."""


class StaleWrite(Exception):
    """The connection changed since it was read (a reconnect or another worker): not ours now."""


class ConnectionChanged(RuntimeError):
    """The connection changed while this call worked on it (a reconnect finished first), so
    this call did not change it: read it again and decide anew."""


# --- authorization state ----------------------------------------------------------------------


class StateError(Exception):
    """The callback's state cannot be used; ``return_url``: the app's, when it is known."""

    reason = "StateInvalid"

    def __init__(self, message: str = "", *, return_url: str | None = None) -> None:
        super().__init__(message)
        self.return_url = return_url


class StateMalformed(StateError):
    reason = "StateMalformed"


class StateUnknown(StateError):
    """Never issued, or already used."""

    reason = "StateUnknown"


class StateExpired(StateError):
    reason = "StateExpired"


class StateUsed(StateError):
    """Consumed already: ``used`` is its tombstone (a ``store.states.UsedState``)."""

    reason = "StateUsed"

    def __init__(self, used: Any) -> None:
        super().__init__("the state was already used", return_url=used.return_url)
        self.used = used


class BindingMismatch(StateError):
    """The callback came to a different browser from the one that started."""

    reason = "BindingMismatch"


# --- connect sessions ---------------------------------------------------------------------------


class InvalidConnectSessionRequest(ValueError):
    """A connect session cannot be created as asked; ``reason`` is the API's error code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ConnectSessionUnusable(Exception):
    """A connect link cannot start (or finish) a sign-in; ``reason`` says why."""

    def __init__(self, reason: str, *, return_url: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.return_url = return_url  # the session's, when it is known


# --- what a person's browser is told ----------------------------------------------------------


class AuthorizationFailed(Exception):
    """Connecting failed: the HTTP status and ``reason`` of the page the person sees.

    The words of that page live in web/words.py, looked up by ``reason``; this carries only
    the facts they need.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        retry_after: int | None = None,
        return_to: str | None = None,
        capsule_error: str | None = None,
        capsule_description: str | None = None,
        return_url: str | None = None,
        accounts: tuple[str, str] | None = None,
        retry_url: str | None = None,
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.return_to = return_to
        self.capsule_error = capsule_error  # the error name Capsule redirected back with
        self.capsule_description = capsule_description
        self.return_url = return_url  # the app's, when the sign-in came from a connect session
        self.accounts = accounts  # (signed in as, expected): a reconnect to another account
        self.retry_url = retry_url  # where "Try again" re-opens the same connect session

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


class InvalidStartRequest(AuthorizationFailed):
    """The start request cannot be served as it is; ``reason`` says why."""

    def __init__(self, reason: str, *, return_url: str | None = None) -> None:
        super().__init__(400, reason, return_url=return_url)
