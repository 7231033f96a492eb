"""Callback: consume the state once, exchange the code once, learn who connected, save it.

Every way this can fail becomes an ``AuthorizationFailed`` with the status and reason of the
page the person sees (web/words.py holds its words); nothing is saved unless all steps
succeed.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from capsule_oauth.capsule import api, token_endpoint
from capsule_oauth.capsule.token_endpoint import TokenResponse
from capsule_oauth.config import Settings
from capsule_oauth.errors import (
    AuthorizationFailed,
    BindingMismatch,
    CapsuleBadResponse,
    CapsuleError,
    CapsuleRateLimited,
    CapsuleTimeout,
    CapsuleUnavailable,
    ConnectSessionUnusable,
    InvalidClient,
    InvalidGrant,
    StateError,
    StateMalformed,
)
from capsule_oauth.flows.hooks import api_base_from_callback, subscribe_hooks
from capsule_oauth.observability import count, count_by, logger
from capsule_oauth.store.connections import ConnectionStore, Identity, refresh_due_at
from capsule_oauth.store.crypto import TokenPair
from capsule_oauth.store.sessions import SessionStore, state_hash
from capsule_oauth.store.states import StateRecord, StateStore
from capsule_oauth.web import binding

_CODE_PATTERN = re.compile(r"^[\x21-\x7e]{1,1024}$")
_ERROR_PATTERN = re.compile(r"^[\x20-\x7e]{1,64}$")

# The page status for each way Capsule can fail, most specific first; anything else is 502.
_CAPSULE_STATUS: tuple[tuple[type[CapsuleError], int], ...] = (
    (InvalidGrant, 400),
    (InvalidClient, 502),
    (CapsuleRateLimited, 503),
    (CapsuleTimeout, 504),
    (CapsuleUnavailable, 502),
)


@dataclass(frozen=True)
class Connected:
    connection_id: str
    site_name: str
    user_name: str
    reconnected: bool
    return_to: str | None
    return_url: str | None  # the app's, when the sign-in came from a connect session
    cookie_path: str  # where the binding cookie was set: the registered callback's path


def _capsule_failure(
    error: CapsuleError, return_to: str | None, return_url: str | None
) -> AuthorizationFailed:
    status = next((code for cls, code in _CAPSULE_STATUS if isinstance(error, cls)), 502)
    retry_after = None
    if isinstance(error, CapsuleRateLimited):
        retry_after = max(int((error.reset_at or time.time() + 60) - time.time()), 1)
    return AuthorizationFailed(
        status, error.reason, retry_after=retry_after, return_to=return_to, return_url=return_url
    )


def _capsule_said_no(params: dict[str, str], return_url: str | None) -> AuthorizationFailed:
    """Capsule redirected back with ``error=`` (RFC 6749 4.1.2.1): nothing to exchange."""
    error = params["error"] if _ERROR_PATTERN.fullmatch(params["error"]) else "invalid"
    if error == "access_denied":
        return AuthorizationFailed(403, "AccessDenied", return_url=return_url)
    return AuthorizationFailed(
        400,
        "CapsuleError",
        return_url=return_url,
        capsule_error=error,
        capsule_description=params.get("error_description", "")[:300] or None,
    )


def _identity(settings: Settings, tokens: TokenResponse) -> Identity:
    def get(path: str, key: str) -> dict[str, Any]:
        body = api.api_request(
            settings.capsule_base_url,
            tokens.access_token,
            "GET",
            path,
            timeout=settings.http_timeout_seconds,
        ).body
        value = body.get(key) if isinstance(body, dict) else None
        if not isinstance(value, dict):
            raise CapsuleBadResponse(f"Capsule {path} has no {key!r} object")
        return value

    # Neither lookup needs the other: side by side, the person waits two round trips to
    # Capsule (token, then both), not three. The pool's exit waits for the site lookup
    # whatever happens, so no request outlives the callback.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="capsule-site") as pool:
        site_lookup = pool.submit(get, "/site", "site")
        user = get("/users/current", "user")
        site = site_lookup.result()
    subdomain = str(site.get("subdomain") or tokens.subdomain or "").strip()
    user_id = user.get("id")
    if not subdomain or user_id in (None, ""):
        raise CapsuleBadResponse("Capsule did not say which site and user connected")
    name = str(user.get("name") or user.get("username") or f"user {user_id}")
    return Identity(
        subdomain=subdomain,
        site_name=str(site.get("name") or subdomain),
        site_url=str(site.get("url") or ""),
        user_id=str(user_id),
        user_name=name,
        username=str(user.get("username") or ""),
    )


def _save(settings: Settings, tokens: TokenResponse, state: StateRecord) -> Identity:
    """Learn who connected and store their tokens for the state's owner.

    A reconnect link must come back with the account it reconnects; a grant that replaced
    an earlier one has the earlier one revoked once the new one is saved.
    """
    if tokens.refresh_token is None:
        raise CapsuleBadResponse("Capsule token response has no refresh_token")
    identity = replace(_identity(settings, tokens), owner=state.owner)
    target = state.session.reconnect_connection_id if state.session else None
    if target and identity.connection_id != target:
        raise AuthorizationFailed(
            409,
            "ReconnectAccountMismatch",
            accounts=(identity.label, state.session.reconnect_label or "the connected account")
            if state.session
            else None,
            return_url=state.session.return_url if state.session else None,
        )
    now = int(time.time())
    expires_at = now + tokens.expires_in
    store = ConnectionStore(settings)
    new = TokenPair(tokens.access_token, tokens.refresh_token)
    saved = store.save_authorized(
        identity,
        new,
        expires_at=expires_at,
        scope=tokens.scope or settings.scope,
        refresh_due_at=refresh_due_at(expires_at, tokens.expires_in, settings.refresh_lead_seconds),
        now=now,
    )
    if saved.previous_tokens:
        _revoke_replaced(settings, store, identity.connection_id, saved.previous_tokens, new)
    return replace(identity, existed=saved.existed)


def _revoke_replaced(
    settings: Settings, store: ConnectionStore, connection_id: str, sealed: bytes, new: TokenPair
) -> None:
    """Best effort: the grant a reconnect replaced must not stay live at Capsule."""
    try:
        previous = store.unseal(connection_id, sealed)
        if previous.refresh_token != new.refresh_token:
            token_endpoint.revoke(settings, token=previous.refresh_token)
    except Exception as error:  # the person is connected: never block them on this
        reason = getattr(error, "reason", type(error).__name__)
        count_by("ReplacedGrantRevokeFailed", "reason", reason)
        logger.warning(
            "Could not revoke the replaced grant",
            extra={"connection_id": connection_id, "reason": reason},
        )
        return
    count("ReplacedGrantRevoked")


def _give_back(settings: Settings, tokens: TokenResponse) -> None:
    """Best effort: revoke a grant we cannot keep. Failing here must not hide the first error."""
    token, hint = (
        (tokens.refresh_token, "refresh_token")
        if tokens.refresh_token
        else (tokens.access_token, "access_token")
    )
    try:
        token_endpoint.revoke(settings, token=token, token_type_hint=hint)
    except Exception as error:  # already failing: say so and go on
        logger.warning("Could not revoke the unused grant", extra={"error": type(error).__name__})


def _consume_state(settings: Settings, state: str | None, nonce: str | None) -> StateRecord:
    """The state this browser started with, consumed; raises a StateError otherwise."""
    if state is None or not binding.well_formed(state):
        raise StateMalformed("the state parameter is missing or malformed")
    if nonce is None or not binding.well_formed(nonce):
        raise BindingMismatch("the browser binding cookie is missing")
    return StateStore(settings).consume(
        state, binding=binding.binding_hash(nonce), now=int(time.time())
    )


def complete_authorization(
    settings: Settings, *, params: dict[str, str], binding_nonce: str | None
) -> Connected:
    """Turn Capsule's redirect into a saved connection, or raise AuthorizationFailed."""
    denied = "error" in params
    code = params.get("code", "")
    if not denied and not _CODE_PATTERN.fullmatch(code):
        raise AuthorizationFailed(400, "CodeMissing")

    # Even a denial must come with this browser's state: only then is Capsule's word shown.
    try:
        state = _consume_state(settings, params.get("state"), binding_nonce)
    except StateError as error:
        raise AuthorizationFailed(400, error.reason) from None
    return_url = state.session.return_url if state.session else None
    if denied:
        raise _capsule_said_no(params, return_url)

    sessions = SessionStore(settings)
    claim = state_hash(state.state)
    if state.session:
        try:
            sessions.claim(state.session.key, state_hash=claim, now=int(time.time()))
        except ConnectSessionUnusable as unusable:
            raise AuthorizationFailed(400, unusable.reason, return_url=return_url) from None
    try:
        return _connect(settings, code, state, return_url)
    except BaseException:
        if state.session:  # nothing was connected: the link may be used again
            sessions.release(state.session.key, state_hash=claim)
        raise


def _connect(
    settings: Settings, code: str, state: StateRecord, return_url: str | None
) -> Connected:
    try:
        tokens = token_endpoint.exchange_code(
            settings,
            code=code,
            redirect_uri=state.redirect_uri,
            code_verifier=state.code_verifier,
        )
    except CapsuleError as error:
        logger.warning("Capsule refused or failed the authorization", extra={"error": str(error)})
        raise _capsule_failure(error, state.return_to, return_url) from None

    try:
        identity = _save(settings, tokens, state)
    except BaseException as error:
        # Capsule granted tokens we could not keep: give them back rather than leave a live
        # grant nobody holds. The person starts again and gets a fresh one.
        _give_back(settings, tokens)
        if isinstance(error, CapsuleError):
            logger.warning("Connecting failed after the exchange", extra={"error": str(error)})
            raise _capsule_failure(error, state.return_to, return_url) from None
        raise
    logger.info(
        "Capsule account connected",
        extra={"connection_id": identity.connection_id, "reconnected": identity.existed},
    )
    # The connection is active now: its REST hooks, with a new hook token (never fails this).
    subscribe_hooks(
        identity.connection_id,
        settings=settings,
        api_base_url=api_base_from_callback(state.redirect_uri),
    )
    return Connected(
        connection_id=identity.connection_id,
        site_name=identity.site_name,
        user_name=identity.user_name,
        reconnected=identity.existed,
        return_to=state.return_to,
        return_url=return_url,
        cookie_path=urlsplit(state.redirect_uri).path or "/",
    )
