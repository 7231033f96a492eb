"""Callback: consume the state once, exchange the code once, learn who connected, save it.

Every way this can fail becomes an ``AuthorizationFailed`` that says, in words for the
person, what happened and what to do next; nothing is saved unless all steps succeed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from capsule_oauth import capsule, connections, crypto, oauth, states
from capsule_oauth.config import Settings
from capsule_oauth.observability import logger

_CODE_PATTERN = re.compile(r"^[\x21-\x7e]{1,1024}$")
_ERROR_PATTERN = re.compile(r"^[\x20-\x7e]{1,64}$")


@dataclass(frozen=True)
class Connected:
    connection_id: str
    site_name: str
    user_name: str
    reconnected: bool
    return_to: str | None


@dataclass
class AuthorizationFailed(Exception):
    """What the person sees: an HTTP status, a title, what happened and what to do next."""

    status: int
    reason: str
    title: str
    message: str
    next_step: str
    detail: str | None = None
    retry_after: int | None = None
    return_to: str | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


_START_AGAIN = "Start again to connect your Capsule account."


def _state_failure(error: states.StateError) -> AuthorizationFailed:
    if isinstance(error, states.StateExpired):
        message = "This sign-in link has expired: it is only valid for a few minutes."
    elif isinstance(error, states.BindingMismatch):
        message = (
            "This sign-in was started in another browser, or this browser does not allow the"
            " cookie that ties the two steps together."
        )
    elif isinstance(error, states.StateUnknown):
        message = "This sign-in link is unknown or was already used."
    else:
        message = "This sign-in link is incomplete."
    return AuthorizationFailed(
        400,
        error.reason,
        "This sign-in link cannot be used",
        message,
        f"{_START_AGAIN} Use the same browser from start to finish.",
    )


def _capsule_failure(error: Exception, return_to: str | None) -> AuthorizationFailed:
    def fail(
        status: int, title: str, message: str, retry_after: int | None = None
    ) -> AuthorizationFailed:
        return AuthorizationFailed(
            status,
            getattr(error, "kind", type(error).__name__),
            title,
            message,
            _START_AGAIN,
            retry_after=retry_after,
            return_to=return_to,
        )

    if isinstance(error, capsule.InvalidGrant):
        return fail(
            400,
            "Capsule did not accept the sign-in",
            "The approval from Capsule expired or was already used.",
        )
    if isinstance(error, capsule.InvalidClient):
        return fail(
            502,
            "This app is not set up correctly",
            "Capsule did not recognise this app's client credentials. The app's owner needs"
            " to check them.",
        )
    if isinstance(error, capsule.CapsuleRateLimited):
        wait = max(int((error.reset_at or time.time() + 60) - time.time()), 1)
        return fail(
            503,
            "Capsule is busy",
            f"Capsule asked us to slow down. Please wait about {wait // 60 + 1} minutes.",
            retry_after=wait,
        )
    if isinstance(error, capsule.CapsuleTimeout):
        return fail(504, "Capsule did not answer in time", "Capsule took too long to respond.")
    if isinstance(error, capsule.CapsuleUnavailable):
        return fail(502, "Capsule is unavailable", "We could not reach Capsule just now.")
    return fail(
        502,
        "Capsule gave an unexpected answer",
        "Capsule's answer was not what we expected, so nothing was saved.",
    )


def _capsule_said_no(params: dict[str, str]) -> AuthorizationFailed:
    """Capsule redirected back with ``error=`` (RFC 6749 4.1.2.1): nothing to exchange."""
    error = params["error"] if _ERROR_PATTERN.fullmatch(params["error"]) else "invalid"
    if error == "access_denied":
        return AuthorizationFailed(
            403,
            "AccessDenied",
            "Access was not allowed",
            "You chose not to allow access in Capsule, so nothing was connected.",
            "If that was a mistake, connect again and choose Allow.",
        )
    description = params.get("error_description", "")[:300]
    return AuthorizationFailed(
        400,
        "CapsuleError",
        "Capsule could not complete the sign-in",
        f"Capsule answered with the error {error!r}.",
        _START_AGAIN,
        detail=f"Capsule said: {description}" if description else None,
    )


def _identity(settings: Settings, tokens: capsule.TokenResponse) -> connections.Identity:
    def get(path: str, key: str) -> dict[str, Any]:
        body = capsule.api_request(
            settings.capsule_base_url,
            tokens.access_token,
            "GET",
            path,
            timeout=settings.http_timeout_seconds,
        ).body
        value = body.get(key) if isinstance(body, dict) else None
        if not isinstance(value, dict):
            raise capsule.CapsuleBadResponse(f"Capsule {path} has no {key!r} object")
        return value

    user = get("/users/current", "user")
    site = get("/site", "site")
    subdomain = str(site.get("subdomain") or tokens.subdomain or "").strip()
    user_id = user.get("id")
    if not subdomain or user_id in (None, ""):
        raise capsule.CapsuleBadResponse("Capsule did not say which site and user connected")
    name = str(user.get("name") or user.get("username") or f"user {user_id}")
    return connections.Identity(
        subdomain=subdomain,
        site_name=str(site.get("name") or subdomain),
        site_url=str(site.get("url") or ""),
        user_id=str(user_id),
        user_name=name,
        username=str(user.get("username") or ""),
    )


def _save(settings: Settings, tokens: capsule.TokenResponse) -> tuple[connections.Identity, bool]:
    """Learn who connected and store their tokens; True when the connection existed."""
    if tokens.refresh_token is None:
        raise capsule.CapsuleBadResponse("Capsule token response has no refresh_token")
    identity = _identity(settings, tokens)
    now = int(time.time())
    expires_at = now + tokens.expires_in
    sealed = crypto.seal(
        settings.token_key_id,
        identity.connection_id,
        crypto.TokenPair(tokens.access_token, tokens.refresh_token),
    )
    existed = connections.save_authorized(
        settings.connections_table,
        identity,
        tokens=sealed,
        expires_at=expires_at,
        scope=tokens.scope or settings.scope,
        refresh_due_at=connections.refresh_due_at(
            expires_at, tokens.expires_in, settings.refresh_lead_seconds
        ),
        now=now,
    )
    return identity, existed


def _give_back(settings: Settings, tokens: capsule.TokenResponse) -> None:
    """Best effort: revoke a grant we cannot keep. Failing here must not hide the first error."""
    token, hint = (
        (tokens.refresh_token, "refresh_token")
        if tokens.refresh_token
        else (tokens.access_token, "access_token")
    )
    try:
        oauth.revoke(settings, token=token, token_type_hint=hint)
    except Exception as error:  # already failing: say so and go on
        logger.warning("Could not revoke the unused grant", extra={"error": type(error).__name__})


def complete_authorization(
    settings: Settings, *, params: dict[str, str], binding_nonce: str | None
) -> Connected:
    """Turn Capsule's redirect into a saved connection, or raise AuthorizationFailed."""
    if "error" in params:
        raise _capsule_said_no(params)
    code = params.get("code", "")
    if not _CODE_PATTERN.fullmatch(code):
        raise AuthorizationFailed(
            400,
            "CodeMissing",
            "This sign-in link is incomplete",
            "The link from Capsule has no valid authorisation code.",
            _START_AGAIN,
        )

    now = int(time.time())
    try:
        state = states.consume(
            settings.state_table, state=params.get("state"), nonce=binding_nonce, now=now
        )
    except states.StateError as error:
        raise _state_failure(error) from None

    try:
        tokens = oauth.exchange_code(
            settings,
            code=code,
            redirect_uri=state.redirect_uri,
            code_verifier=state.code_verifier,
        )
    except capsule.CapsuleError as error:
        logger.warning("Capsule refused or failed the authorization", extra={"error": str(error)})
        raise _capsule_failure(error, state.return_to) from None

    try:
        identity, existed = _save(settings, tokens)
    except BaseException as error:
        # Capsule granted tokens we could not keep: give them back rather than leave a live
        # grant nobody holds. The person starts again and gets a fresh one.
        _give_back(settings, tokens)
        if isinstance(error, capsule.CapsuleError):
            logger.warning("Connecting failed after the exchange", extra={"error": str(error)})
            raise _capsule_failure(error, state.return_to) from None
        raise
    logger.info(
        "Capsule account connected",
        extra={"connection_id": identity.connection_id, "reconnected": existed},
    )
    return Connected(
        connection_id=identity.connection_id,
        site_name=identity.site_name,
        user_name=identity.user_name,
        reconnected=existed,
        return_to=state.return_to,
    )
