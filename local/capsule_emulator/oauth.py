"""Capsule's token and revocation endpoints: client authentication, the two grants, PKCE."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qs, unquote_plus

from local.capsule_emulator.store import CapsuleStore, Code, parse_scope

# RFC 7636 section 4.1: 43 to 128 unreserved characters.
PKCE_RE: Final = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
NO_STORE: Final[Mapping[str, str]] = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_BASIC_CHALLENGE: Final[Mapping[str, str]] = {"WWW-Authenticate": 'Basic realm="Capsule"'}


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error from the token or revocation endpoint."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers: Mapping[str, str] = headers or {}


def invalid_request(description: str) -> OAuthError:
    return OAuthError(400, "invalid_request", description)


def invalid_grant(description: str) -> OAuthError:
    return OAuthError(400, "invalid_grant", description)


def same(left: str, right: str) -> bool:
    return secrets.compare_digest(left.encode("utf-8"), right.encode("utf-8"))


def single_values(multi: Mapping[str, list[str]]) -> dict[str, str]:
    """Parameters that appear once with a non-empty value (RFC 6749 section 3.1)."""
    repeated = sorted(key for key, values in multi.items() if len(values) > 1)
    if repeated:
        raise invalid_request(f"Parameter sent more than once: {repeated[0]}")
    return {key: values[0] for key, values in multi.items() if values and values[0] != ""}


def form_fields(body: bytes) -> dict[str, list[str]]:
    """A form body, leniently: what the sign-in pages and the request log read."""
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return {}


def oauth_form(query: str, content_type: str, body: bytes) -> dict[str, str]:
    """A token or revocation request's parameters: form encoded, in the body, each once."""
    if query:
        raise invalid_request("Send parameters in the request body, not the query string")
    if (
        content_type.split(";", maxsplit=1)[0].strip().lower()
        != "application/x-www-form-urlencoded"
    ):
        raise invalid_request("Content-Type must be application/x-www-form-urlencoded")
    try:
        multi = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise invalid_request("The body is not valid form data") from None
    return single_values(multi)


def authenticate_client(
    store: CapsuleStore, form: Mapping[str, str], authorization: str | None
) -> str:
    """The client id, once its credentials check out (body or HTTP Basic, not both)."""
    if authorization is None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if client_id is None or secret is None:
            raise OAuthError(
                401,
                "invalid_client",
                "Client authentication failed: send client_id and client_secret",
            )
        headers = None
    else:
        client_id, secret = _basic_credentials(authorization)
        headers = _BASIC_CHALLENGE
        if "client_secret" in form:
            raise invalid_request("Use one client authentication method, not two")
        if form.get("client_id", client_id) != client_id:
            raise invalid_request("client_id in the body differs from the Basic credentials")
    if not (same(client_id, store.client_id) & same(secret, store.client_secret)):
        raise OAuthError(401, "invalid_client", "Client authentication failed", headers)
    return client_id


def token(
    store: CapsuleStore, form: Mapping[str, str], authorization: str | None
) -> dict[str, object]:
    """POST /oauth/token: the token JSON, or OAuthError."""
    client_id = authenticate_client(store, form, authorization)
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise invalid_request("grant_type is required")
    if grant_type == "authorization_code":
        return exchange_code(store, client_id, form)
    if grant_type == "refresh_token":
        return refresh(store, client_id, form)
    raise OAuthError(400, "unsupported_grant_type", f"Unsupported grant_type {grant_type!r}")


def exchange_code(
    store: CapsuleStore, client_id: str, form: Mapping[str, str]
) -> dict[str, object]:
    code, redirect_uri = form.get("code"), form.get("redirect_uri")
    if code is None:
        raise invalid_request("code is required")
    if redirect_uri is None:
        raise invalid_request("redirect_uri is required")
    with store.lock:
        record = store.code(code)
        if record is None or record.client_id != client_id:
            raise invalid_grant("The authorisation code is invalid")
        if record.used:
            if record.grant_id is not None:
                store.drop_grant(record.grant_id)
            raise invalid_grant(
                "The authorisation code was already used; tokens issued from it are revoked"
            )
        if store.now() >= record.expires_at:
            raise invalid_grant("The authorisation code has expired")
        if redirect_uri != record.redirect_uri:
            raise invalid_grant("redirect_uri does not match the authorisation request")
        check_pkce(record, form.get("code_verifier"))
        record.used = True
        grant = store.new_grant(client_id, store.account(record.subdomain), record.scope)
        record.grant_id = grant.grant_id
        return store.token_json(grant)


def refresh(store: CapsuleStore, client_id: str, form: Mapping[str, str]) -> dict[str, object]:
    """Rotates both tokens; the old pair dies."""
    refresh_token = form.get("refresh_token")
    if refresh_token is None:
        raise invalid_request("refresh_token is required")
    requested = form.get("scope")
    with store.lock:
        grant = store.grant_by_refresh(refresh_token)
        if grant is None or grant.client_id != client_id:
            raise invalid_grant("The refresh token is invalid, expired or revoked")
        if requested is not None:
            try:
                scope = parse_scope(requested)
            except ValueError as exc:
                raise OAuthError(400, "invalid_scope", str(exc)) from None
            if not set(scope.split()) <= set(grant.scope.split()):
                raise OAuthError(400, "invalid_scope", "scope exceeds the original grant")
            grant.scope = scope
        store.rotate(grant)
        return store.token_json(grant)


def revoke(store: CapsuleStore, form: Mapping[str, str], authorization: str | None) -> None:
    """RFC 7009: either token revokes the whole grant; an unknown token is no error."""
    client_id = authenticate_client(store, form, authorization)
    revoked = form.get("token")
    if revoked is None:
        raise invalid_request("token is required")
    with store.lock:
        grant = store.grant_by_access(revoked) or store.grant_by_refresh(revoked)
        if grant is not None and grant.client_id == client_id:
            store.drop_grant(grant.grant_id)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_pkce(code: Code, verifier: str | None) -> None:
    challenge = code.code_challenge
    if challenge is None:
        if verifier is not None:
            raise invalid_grant("code_verifier sent, but the authorisation had no code_challenge")
        return
    if verifier is None:
        raise invalid_grant("code_verifier is required: the authorisation had a code_challenge")
    if not PKCE_RE.fullmatch(verifier):
        raise invalid_grant("code_verifier must be 43-128 URL-safe characters")
    computed = s256(verifier) if code.code_challenge_method == "S256" else verifier
    if not same(computed, challenge):
        raise invalid_grant("code_verifier does not match the code_challenge")


def _basic_credentials(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.strip().partition(" ")
    failure = OAuthError(
        401,
        "invalid_client",
        "Client authentication failed: malformed Authorization header",
        _BASIC_CHALLENGE,
    )
    if scheme.lower() != "basic":
        raise failure
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise failure from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise failure
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(secret)
