"""Callback: consume the state once, exchange the code once, learn who connected, save it.

Every way this can fail becomes an ``AuthorizationFailed`` with the status and reason of the
page the person sees (web/words.py holds its words); nothing is saved unless all steps
succeed.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from capsule_oauth.capsule import api, budget, token_endpoint
from capsule_oauth.capsule.token_endpoint import TokenResponse
from capsule_oauth.config import Settings
from capsule_oauth.errors import (
    AuthorizationFailed,
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
    StateUsed,
)
from capsule_oauth.flows.hooks import api_base_from_callback, subscribe_hooks
from capsule_oauth.flows.start import StartResult, begin
from capsule_oauth.observability import count, count_by, logger
from capsule_oauth.store import results
from capsule_oauth.store.connections import ConnectionStore, Identity, refresh_due_at
from capsule_oauth.store.crypto import TokenPair
from capsule_oauth.store.results import ResultStore
from capsule_oauth.store.sessions import SessionStore, state_hash
from capsule_oauth.store.states import StateRecord, StateStore, UsedState, state_digest
from capsule_oauth.web import binding

_CODE_PATTERN = re.compile(r"^[\x21-\x7e]{1,1024}$")
_ERROR_PATTERN = re.compile(r"^[\x20-\x7e]{1,64}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")

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
    result: str | None = field(default=None, repr=False)  # capsule_result for the return URL
    digest: str = ""  # names the used state in the pages' own links (never the state)
    again: bool = False  # this browser came back to a sign-in it had already completed


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
    answers: list[api.APIResponse] = []

    def get(path: str, key: str) -> dict[str, Any]:
        # Whose budget these draw from is what they find out: counted once they answer.
        answer = api.api_request(
            settings.capsule_base_url,
            tokens.access_token,
            "GET",
            path,
            timeout=settings.http_timeout_seconds,
            draw=None,
        )
        answers.append(answer)
        value = answer.body.get(key) if isinstance(answer.body, dict) else None
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
    named = site.get("subdomain") or tokens.subdomain or api.subdomain_of(site.get("url"))
    subdomain = str(named or "").strip()
    user_id = user.get("id")
    if not subdomain or user_id in (None, ""):
        raise CapsuleBadResponse("Capsule did not say which site and user connected")
    _count_lookups(settings, subdomain, str(user_id), answers)
    name = str(user.get("name") or user.get("username") or f"user {user_id}")
    return Identity(
        subdomain=subdomain,
        site_name=str(site.get("name") or subdomain),
        site_url=str(site.get("url") or ""),
        user_id=str(user_id),
        user_name=name,
        username=str(user.get("username") or ""),
    )


def _count_lookups(
    settings: Settings, site: str, user_id: str, answers: list[api.APIResponse]
) -> None:
    """The identity lookups drew on this user's budget; a fault here never stops a sign-in."""
    spender = budget.shared(settings)
    try:
        spender.record(site, user_id, "callback", len(answers))
        limits = [a.rate_limit for a in answers if a.rate_limit and a.rate_limit.remaining]
        if (
            limits
            and min(limit.remaining or 0 for limit in limits) < settings.capsule_hourly_budget
        ):
            last = min(limits, key=lambda limit: limit.remaining or 0)
            spender.observe(
                site,
                user_id,
                status=200,
                limit=last.limit,
                remaining=last.remaining,
                reset_at=last.reset_at,
            )
    except (ClientError, BotoCoreError) as fault:
        logger.warning("Capsule budget not updated", extra={"error": type(fault).__name__})


def _save(
    settings: Settings, tokens: TokenResponse, state: StateRecord
) -> tuple[Identity, str | None]:
    """Learn who connected and store their tokens for the state's owner: (who, the
    capsule_result for the app's return URL, when there is one).

    A reconnect link must come back with the account it reconnects; a grant that replaced
    an earlier one has the earlier one revoked once the new one is saved. With
    ConfirmConnections, a new connection from a connect link is saved pending: only the
    app's confirm of its result, for the user it has signed in, makes it usable.
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
    result = results.new_result() if state.session and state.session.return_url else None
    hashed = results.result_hash(result) if result else None
    if hashed:  # first, so a saved connection always has its result
        ResultStore(settings).put(
            hashed, connection_id=identity.connection_id, owner=identity.owner, now=now
        )
    # Even a reconnect link saves pending unless the owner has the account active or
    # needing reauth (the store decides in its write): a pending one must not be confirmed
    # by reconnecting it.
    pending = settings.confirm_connections and hashed is not None
    saved = store.save_authorized(
        identity,
        new,
        expires_at=expires_at,
        scope=tokens.scope or settings.scope,
        refresh_due_at=refresh_due_at(expires_at, tokens.expires_in, settings.refresh_lead_seconds),
        now=now,
        pending_until=now + settings.connect_confirm_seconds if pending else None,
        result_hash=hashed,
    )
    if saved.previous_tokens:
        _revoke_replaced(settings, store, identity.connection_id, saved.previous_tokens, new)
    return replace(identity, existed=saved.existed and not saved.pending), result


def _revoke_replaced(
    settings: Settings, store: ConnectionStore, connection_id: str, sealed: bytes, new: TokenPair
) -> None:
    """Best effort: the grant a reconnect replaced must not stay live at Capsule, neither its
    refresh token nor the access token it issued (as disconnect revokes both)."""
    try:
        previous = store.unseal(connection_id, sealed)
        if previous.refresh_token != new.refresh_token:
            token_endpoint.revoke(settings, token=previous.refresh_token)
        if previous.access_token != new.access_token:
            token_endpoint.revoke(
                settings,
                token=previous.access_token,
                token_type_hint="access_token",  # noqa: S106 - an RFC 7009 hint name
            )
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
        # Nothing to check it against: a completed sign-in still says so (StateUsed).
        nonce = ""
    return StateStore(settings).consume(
        state, binding=binding.binding_hash(nonce) if nonce else "-", now=int(time.time())
    )


def _mine(used: UsedState, nonce: str | None) -> bool:
    return (
        bool(nonce)
        and binding.well_formed(nonce)
        and used.bound_to(binding.binding_hash(nonce or ""))
    )


def _came_back(settings: Settings, used: UsedState, nonce: str | None) -> Connected:
    """A callback for a sign-in that was already used: "already connected" for the browser
    that completed it; for any other, a refusal that changes nothing and calls no one."""
    mine = _mine(used, nonce)
    if used.expires_at <= int(time.time()):  # kept no longer than StateTtlSeconds
        raise AuthorizationFailed(400, "SignInCompleted" if used.completed else "StateExpired")
    if used.completed and used.connection_id:
        if not mine:
            raise AuthorizationFailed(400, "SignInCompleted")
        return Connected(
            connection_id=used.connection_id,
            site_name=used.site_name,
            user_name=used.user_name,
            reconnected=used.reconnected,
            return_to=used.return_to,
            return_url=used.return_url,
            cookie_path=urlsplit(used.redirect_uri).path or "/",
            result=binding.open_for_browser(nonce or "", used.sealed_result)
            if used.sealed_result
            else None,
            digest=used.digest,
            again=True,
        )
    if not mine:
        raise AuthorizationFailed(400, "BindingMismatch", return_url=used.return_url)
    if used.failed:
        raise AuthorizationFailed(
            400, "SignInEnded", return_url=used.return_url, retry_url=_retry_link(settings, used)
        )
    raise AuthorizationFailed(409, "SignInInProgress", return_url=used.return_url)


def _retry_link(settings: Settings, used: UsedState) -> str | None:
    """Where "Try again" re-opens this sign-in's connect session, while it lives unfinished."""
    if used.session_key is None:
        return None
    try:
        SessionStore(settings).live_by_key(used.session_key, now=int(time.time()))
    except ConnectSessionUnusable:
        return None
    except Exception as error:  # no link is better than a page that fails
        logger.warning("Could not check the connect session", extra={"error": type(error).__name__})
        return None
    return f"{urlsplit(used.redirect_uri).path or '/'}?retry={used.digest}"


def _used(settings: Settings, digest: str, nonce: str | None) -> UsedState:
    """The used state a page's own link names, for the browser that used it."""
    used = (
        StateStore(settings).used(digest, now=int(time.time()))
        if _DIGEST.fullmatch(digest)
        else None
    )
    if used is None:
        raise AuthorizationFailed(410, "PageExpired")
    if not _mine(used, nonce):
        raise AuthorizationFailed(400, "BindingMismatch", return_url=used.return_url)
    return used


def connected_page(settings: Settings, *, digest: str, binding_nonce: str | None) -> Connected:
    """What the page after a callback without a return URL shows, reload after reload."""
    used = _used(settings, digest, binding_nonce)
    if not used.completed:
        raise AuthorizationFailed(410, "PageExpired")
    return _came_back(settings, used, binding_nonce)


def retry_sign_in(
    settings: Settings, *, digest: str, binding_nonce: str | None, scheme: str, host: str
) -> StartResult:
    """ "Try again" on a failure page: a new sign-in of the same connect session, while it
    lives and is unfinished; otherwise an AuthorizationFailed saying to start in the app."""
    used = _used(settings, digest, binding_nonce)
    if used.session_key is None or used.completed:
        raise AuthorizationFailed(400, "SessionFinished", return_url=used.return_url)
    try:
        link = SessionStore(settings).live_by_key(used.session_key, now=int(time.time()))
    except ConnectSessionUnusable as unusable:
        raise AuthorizationFailed(400, unusable.reason, return_url=unusable.return_url) from None
    return begin(settings, scheme=scheme, host=host, return_to=used.return_to, link=link)


def complete_authorization(
    settings: Settings, *, params: dict[str, str], binding_nonce: str | None
) -> Connected:
    """Turn Capsule's redirect into a saved connection, or raise AuthorizationFailed.

    A sign-in this browser already completed answers what it connected (``again``), and
    changes nothing.
    """
    denied = "error" in params
    code = params.get("code", "")
    if not denied and not _CODE_PATTERN.fullmatch(code):
        raise AuthorizationFailed(400, "CodeMissing")

    # Even a denial must come with this browser's state: only then is Capsule's word shown.
    try:
        state = _consume_state(settings, params.get("state"), binding_nonce)
    except StateUsed as used:
        return _came_back(settings, used.used, binding_nonce)
    except StateError as error:
        raise AuthorizationFailed(400, error.reason, return_url=error.return_url) from None
    return_url = state.session.return_url if state.session else None
    store = StateStore(settings)
    if denied:
        _mark_failed(store, state)
        said_no = _capsule_said_no(params, return_url)
        said_no.retry_url = _retry_link(settings, _as_used(state))
        raise said_no

    sessions = SessionStore(settings)
    claim = state_hash(state.state)
    if state.session:
        try:
            sessions.claim(state.session.key, state_hash=claim, now=int(time.time()))
        except ConnectSessionUnusable as unusable:
            _mark_failed(store, state)
            raise AuthorizationFailed(400, unusable.reason, return_url=return_url) from None
    try:
        return _connect(settings, code, state, return_url, binding_nonce or "")
    except BaseException as error:
        if state.session:  # nothing was connected: the link may be used again
            sessions.release(state.session.key, state_hash=claim)
        _mark_failed(store, state)
        if isinstance(error, AuthorizationFailed) and error.retry_url is None:
            error.retry_url = _retry_link(settings, _as_used(state))
        raise


def _as_used(state: StateRecord) -> UsedState:
    return UsedState(
        digest=state_digest(state.state),
        binding="",
        expires_at=state.expires_at,
        redirect_uri=state.redirect_uri,
        return_to=state.return_to,
        session_key=state.session.key if state.session else None,
        return_url=state.session.return_url if state.session else None,
    )


def _mark_failed(store: StateStore, state: StateRecord) -> None:
    """Best effort: a reload of this page then says the sign-in ended, not "in progress"."""
    try:
        store.failed(state.state, now=int(time.time()))
    except Exception as error:
        logger.warning("Could not mark the sign-in ended", extra={"error": type(error).__name__})


def _remember_completed(
    settings: Settings, state: StateRecord, connected: Connected, nonce: str
) -> None:
    """Best effort: the person is connected whether or not a reload can say so later."""
    try:
        StateStore(settings).completed(
            state.state,
            connection_id=connected.connection_id,
            site_name=connected.site_name,
            user_name=connected.user_name,
            reconnected=connected.reconnected,
            sealed_result=binding.seal_for_browser(nonce, connected.result)
            if connected.result and nonce
            else None,
            now=int(time.time()),
        )
    except Exception as error:
        logger.warning(
            "Could not remember the completed sign-in", extra={"error": type(error).__name__}
        )


def _connect(
    settings: Settings, code: str, state: StateRecord, return_url: str | None, nonce: str
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
        identity, result = _save(settings, tokens, state)
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
    # An active connection gets its REST hooks now, with a new hook token (never fails the
    # sign-in); a pending one gets them when the app confirms it.
    subscribe_hooks(
        identity.connection_id,
        settings=settings,
        api_base_url=api_base_from_callback(state.redirect_uri),
    )
    connected = Connected(
        connection_id=identity.connection_id,
        site_name=identity.site_name,
        user_name=identity.user_name,
        reconnected=identity.existed,
        return_to=state.return_to,
        return_url=return_url,
        cookie_path=urlsplit(state.redirect_uri).path or "/",
        result=result,
        digest=state_digest(state.state),
    )
    _remember_completed(settings, state, connected, nonce)
    return connected
