"""Capsule's token endpoint: one function per grant (exchange, refresh, revoke).

Each takes the settings, signs in with the client credentials from Secrets Manager (cached)
and, when Capsule answers invalid_client, reads the secret again and retries once if it
changed (rotation). Retrying is safe: Capsule refuses the client before it looks at the
code or token.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import requests

from capsule_oauth.capsule import api, credentials
from capsule_oauth.capsule.credentials import ClientCredentials
from capsule_oauth.config import Settings
from capsule_oauth.errors import (
    CapsuleBadResponse,
    InvalidClient,
    InvalidGrant,
    OAuthError,
    RevocationUnsupported,
)
from capsule_oauth.observability import logger

T = TypeVar("T")

# RFC 6749 section 5.2 error names with a class of their own; any other is an OAuthError.
OAUTH_ERRORS: dict[str, type[OAuthError]] = {
    "invalid_grant": InvalidGrant,
    "invalid_client": InvalidClient,
}

# Capsule's discovery document lists /oauth/revoke; its docs page reportedly says
# /oauth/token/revoke. Neither is confirmed, so try both, in that order.
REVOKE_PATHS = ("/oauth/revoke", "/oauth/token/revoke")

MAX_EXPIRES_IN = 10 * 366 * 86_400  # Capsule issues 7 days; beyond ten years is malformed


@dataclass(frozen=True)
class TokenResponse:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: int
    scope: str | None
    subdomain: str | None


def exchange_code(
    settings: Settings, *, code: str, redirect_uri: str, code_verifier: str | None
) -> TokenResponse:
    """POST grant_type=authorization_code. Called once per code: a retry would be invalid_grant."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier:
        form["code_verifier"] = code_verifier
    return _signed_in(
        settings, lambda client: _token_request(settings, form, client, give_back=True)
    )


def refresh(
    settings: Settings, *, refresh_token: str, deadline: float | None = None
) -> TokenResponse:
    """POST grant_type=refresh_token, answered in full by ``deadline`` (api.now() clock).
    The answer's refresh token (if any) replaces ours."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return _signed_in(
        settings, lambda client: _token_request(settings, form, client, deadline=deadline)
    )


def revoke(
    settings: Settings,
    *,
    token: str,
    token_type_hint: str = "refresh_token",  # noqa: S107 - an RFC 7009 hint name
) -> None:
    """RFC 7009: revoke the grant behind ``token``. An unknown token counts as done."""
    form = {"token": token, "token_type_hint": token_type_hint}
    _signed_in(settings, lambda client: _revoke(settings, form, client))


def _signed_in(settings: Settings, call: Callable[[ClientCredentials], T]) -> T:
    """Run ``call`` with the cached credentials; on invalid_client re-read the secret and,
    if it changed, try once more (a rotated secret while our cache holds the old one)."""
    cached = credentials.get_client_credentials(settings)
    try:
        return call(cached)
    except InvalidClient:
        fresh = credentials.get_client_credentials(settings, force_fetch=True)
        if fresh == cached:
            raise
        return call(fresh)


def _post(
    settings: Settings,
    path: str,
    form: dict[str, str],
    client: ClientCredentials,
    deadline: float | None = None,
) -> requests.Response:
    """POST a form, the client authenticated as TokenEndpointAuthMethod says (RFC 6749 2.3.1)."""
    url = f"{settings.capsule_base_url}{path}"
    if settings.token_auth_method == "client_secret_basic":  # noqa: S105 - a method's name
        pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
        basic = base64.b64encode(pair.encode()).decode()
        return api.send(
            "POST",
            url,
            settings.http_timeout_seconds,
            data=form,
            headers={"Authorization": f"Basic {basic}"},
            deadline=deadline,
        )
    body = {**form, "client_id": client.client_id, "client_secret": client.client_secret}
    return api.send("POST", url, settings.http_timeout_seconds, data=body, deadline=deadline)


def _token_request(
    settings: Settings,
    form: dict[str, str],
    client: ClientCredentials,
    *,
    give_back: bool = False,
    deadline: float | None = None,
) -> TokenResponse:
    response = _post(settings, "/oauth/token", form, client, deadline)
    api.raise_for_common(response)
    if response.status_code != 200:
        _raise_oauth_error(response, "token endpoint")
    payload = api.json_body(response)
    try:
        return _parse_token_response(payload)
    except CapsuleBadResponse:
        if give_back:  # Capsule granted something we cannot use: revoke it, then fail
            _give_back_unusable(settings, payload, client)
        raise


def _give_back_unusable(settings: Settings, payload: Any, client: ClientCredentials) -> None:
    """Revoke every token that came back, each on its own: one failing must not keep the
    other alive (best effort: the caller is already failing)."""
    if not isinstance(payload, dict):
        return
    for hint in ("refresh_token", "access_token"):
        token = payload.get(hint)
        if isinstance(token, str) and token:
            try:
                _revoke(settings, {"token": token, "token_type_hint": hint}, client)
            except Exception as error:  # already failing: the first error is the one to raise
                logger.warning(
                    "Could not revoke an unusable grant",
                    extra={"error": type(error).__name__, "token_type_hint": hint},
                )


def _revoke(settings: Settings, form: dict[str, str], client: ClientCredentials) -> None:
    for path in REVOKE_PATHS:
        response = _post(settings, path, form, client)
        if response.status_code in (404, 405):
            continue  # not this path: try the other one
        api.raise_for_common(response)
        if response.status_code == 200:
            return
        try:
            _raise_oauth_error(response, "revocation endpoint")
        except InvalidGrant:
            return  # already dead: revoked is what we wanted
    raise RevocationUnsupported(
        f"Capsule has no revocation endpoint at {' or '.join(REVOKE_PATHS)} (both answered"
        " 404): revoke the app's access in Capsule's own settings instead"
    )


def _raise_oauth_error(response: requests.Response, endpoint: str) -> None:
    status = response.status_code
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = ""
    if isinstance(payload, dict):
        error = str(payload.get("error") or "").strip()
        message = str(payload.get("message") or payload.get("error_description") or "").lower()
        # Capsule's own error bodies are not documented: recognise the RFC name anywhere.
        if not error and "invalid_grant" in message:
            error = "invalid_grant"
    if not error and status == 401:
        error = "invalid_client"  # a bare 401 from the token endpoint refuses the client
    known = OAUTH_ERRORS.get(error)
    if known is not None:
        raise known(error, status, endpoint)
    if 400 <= status < 500 and error:
        raise OAuthError(error[:64], status, endpoint)
    raise CapsuleBadResponse(f"Capsule {endpoint} answered {status}")


def _parse_token_response(payload: Any) -> TokenResponse:
    if not isinstance(payload, dict):
        raise CapsuleBadResponse("Capsule token response is not a JSON object")
    access_token = payload.get("access_token")
    refresh_token = payload.get("refresh_token")
    expires_in = payload.get("expires_in")
    if not isinstance(access_token, str) or not access_token:
        raise CapsuleBadResponse("Capsule token response has no access_token")
    if refresh_token is not None and (not isinstance(refresh_token, str) or not refresh_token):
        raise CapsuleBadResponse("Capsule token response has an empty refresh_token")
    expires_in = api.bounded_int(expires_in, low=1, high=MAX_EXPIRES_IN)
    if expires_in is None:
        raise CapsuleBadResponse("Capsule token response has no valid expires_in")
    token_type = str(payload.get("token_type") or "bearer").lower()
    if token_type != "bearer":  # noqa: S105 - a token type name, not a secret
        raise CapsuleBadResponse(f"Capsule issued an unsupported token type {token_type[:16]!r}")
    scope = payload.get("scope")
    subdomain = payload.get("subdomain")
    return TokenResponse(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=expires_in,
        scope=scope if isinstance(scope, str) else None,
        subdomain=subdomain if isinstance(subdomain, str) else None,
    )
