"""The sign-in pages' flow: account picker, login, consent, then a redirect with a code."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from local.capsule_emulator import pages
from local.capsule_emulator.oauth import PKCE_RE, OAuthError, same, single_values
from local.capsule_emulator.store import CapsuleStore, Pending, parse_scope


class PageError(Exception):
    """An error shown to the person as an HTML page (never redirected)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RedirectError(Exception):
    """An RFC 6749 section 4.1.2.1 error sent back to the (verified) redirect_uri."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def with_params(uri: str, params: Mapping[str, str | None]) -> str:
    query = urlencode({key: value for key, value in params.items() if value is not None})
    separator = "&" if urlsplit(uri).query else ("" if uri.endswith("?") else "?")
    return f"{uri}{separator}{query}"


def begin_authorisation(store: CapsuleStore, multi: Mapping[str, list[str]]) -> str:
    """GET /oauth/authorise: the account picker for a new request, or PageError /
    RedirectError (errors go back to the app only once its redirect_uri is trusted)."""
    client_ids = multi.get("client_id", [])
    if len(client_ids) != 1 or not client_ids[0]:
        raise PageError(400, "The request has no client_id, or more than one.")
    if not same(client_ids[0], store.client_id):
        raise PageError(400, "The client_id is not a registered application.")
    redirects = multi.get("redirect_uri", [])
    if len(redirects) != 1 or not _redirect_uri_ok(store, redirects[0]):
        raise PageError(
            400, "The redirect_uri is missing or is not registered for this application."
        )
    redirect_uri = redirects[0]
    state = next((value for value in multi.get("state", []) if value), None)

    def fail(error: str, description: str) -> RedirectError:
        params = {"error": error, "error_description": description, "state": state}
        return RedirectError(with_params(redirect_uri, params))

    try:
        params = single_values(multi)
    except OAuthError as exc:
        raise fail("invalid_request", exc.description) from None
    response_type = params.get("response_type")
    if response_type is None:
        raise fail("invalid_request", "response_type is required")
    if response_type != "code":
        raise fail("unsupported_response_type", "Only response_type=code is supported")
    try:
        scope = parse_scope(params.get("scope"))
    except ValueError as exc:
        raise fail("invalid_scope", str(exc)) from None
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if challenge is None and method is not None:
        raise fail("invalid_request", "code_challenge_method sent without code_challenge")
    if challenge is not None:
        method = method or "plain"
        if method not in ("S256", "plain"):
            raise fail("invalid_request", "code_challenge_method must be S256 or plain")
        if not PKCE_RE.fullmatch(challenge):
            raise fail("invalid_request", "code_challenge must be 43-128 URL-safe characters")
    pending = Pending(
        request_id=secrets.token_urlsafe(18),
        redirect_uri=redirect_uri,
        state=params.get("state"),
        scope=scope,
        code_challenge=challenge,
        code_challenge_method=method,
        created_at=store.now(),
    )
    store.add_pending(pending)
    return pages.account_page(pending.request_id, store.accounts)


def choose_account(store: CapsuleStore, request_id: str | None, raw_subdomain: str | None) -> str:
    """Pick the account (or note why not); the request id whose page comes next."""
    pending = _live(store, request_id)
    account = store.find_account(_normalise_subdomain(raw_subdomain or ""))
    with store.lock:
        if account is None:
            shown = raw_subdomain or ""
            pending.error = (
                f"There is no Capsule account at {shown!r}." if shown else "Enter an account."
            )
            pending.subdomain = None
        else:
            pending.subdomain = account.subdomain
        pending.authenticated = False
    return pending.request_id


def login(
    store: CapsuleStore, request_id: str | None, username: str | None, password: str | None
) -> str:
    """Log in (or note why not); the request id whose page comes next."""
    pending = _live(store, request_id)
    if pending.subdomain is None:
        raise PageError(400, "Choose your Capsule account first.")
    account = store.account(pending.subdomain)
    valid = same((username or "").strip().lower(), account.username.lower()) & same(
        password or "", account.password
    )
    with store.lock:
        if valid:
            pending.authenticated = True
        else:
            pending.error = "Incorrect username or password."
    return pending.request_id


def step_page(store: CapsuleStore, request_id: str | None) -> str:
    """GET: the page the request is at (picker, login or consent). Every form posts and is
    answered with a redirect here, so Back never asks to send a form again."""
    pending = _live(store, request_id)
    with store.lock:
        error, pending.error = pending.error, None
    if pending.subdomain is None:
        return pages.account_page(pending.request_id, store.accounts, error)
    account = store.account(pending.subdomain)
    if not pending.authenticated:
        return pages.login_page(pending.request_id, account, error)
    return pages.consent_page(pending.request_id, store.app_name, account, pending.scope)


def decide(store: CapsuleStore, request_id: str | None, decision: str | None) -> str:
    """Allow or deny: the Location to send the browser back to."""
    pending = _live(store, request_id)
    if not pending.authenticated or pending.subdomain is None:
        raise PageError(400, "Log in before allowing or denying access.")
    if decision not in ("allow", "deny"):
        raise PageError(400, "decision must be allow or deny.")
    # As Capsule does, the consent may be answered again while the request lives (Back,
    # then Allow): each approval is a new code with the same state.
    if decision == "deny":
        params: dict[str, str | None] = {
            "error": "access_denied",
            "error_description": "The user denied access to their Capsule account",
            "state": pending.state,
        }
        return with_params(pending.redirect_uri, params)
    code = store.issue_code(
        store.account(pending.subdomain),
        pending.redirect_uri,
        pending.scope,
        pending.code_challenge,
        pending.code_challenge_method,
    )
    return with_params(pending.redirect_uri, {"code": code, "state": pending.state})


def _live(store: CapsuleStore, request_id: str | None) -> Pending:
    pending = store.pending(request_id)
    if pending is None:
        raise PageError(
            400,
            "This authorisation request is unknown, has expired or was already answered. "
            "Start again from the application.",
        )
    return pending


def _redirect_uri_ok(store: CapsuleStore, uri: str) -> bool:
    if store.allowed_redirect_uris is not None:
        return uri in store.allowed_redirect_uris
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment


def _normalise_subdomain(raw: str) -> str:
    value = raw.strip().lower()
    for prefix in ("https://", "http://"):
        value = value.removeprefix(prefix)
    return value.split("/", 1)[0].removesuffix(".capsulecrm.com")
