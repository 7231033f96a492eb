"""Start: issue a state bound to this browser and send the person to Capsule to approve.

Kept free of ``requests`` so the start function's cold start stays small.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from capsule_oauth import states
from capsule_oauth.config import Settings
from capsule_oauth.credentials import get_client_credentials

CALLBACK_PATH = "/auth/callback"
BINDING_COOKIE = "capsule_oauth_binding"
_MAX_RETURN_TO = 512


class InvalidStartRequest(ValueError):
    """The start request cannot be served as it is; the message says why."""


@dataclass(frozen=True)
class StartResult:
    authorise_url: str = field(repr=False)
    binding_cookie: str = field(repr=False)


def redirect_uri(settings: Settings, *, scheme: str, host: str) -> str:
    """The registered callback URL: the fixed setting, or this API's own /auth/callback."""
    if settings.redirect_uri:
        return settings.redirect_uri
    if scheme not in {"http", "https"} or not host or any(c in host for c in "/\\@?# "):
        raise InvalidStartRequest("cannot tell this API's own address from the request")
    return f"{scheme}://{host}{CALLBACK_PATH}"


def safe_return_to(value: str | None) -> str | None:
    """Accept only a path on this site ("/x"), never "//host", a URL or a backslash trick."""
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if (
        len(value) > _MAX_RETURN_TO
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or parts.scheme
        or parts.netloc
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        raise InvalidStartRequest("return_to must be a path on this site, such as /settings")
    return value


def binding_cookie_name(state: str) -> str:
    """One cookie per sign-in, named after its state: two tabs starting at once both finish."""
    return f"{BINDING_COOKIE}_{hashlib.sha256(state.encode()).hexdigest()[:16]}"


def binding_cookie(state: str, nonce: str, *, path: str, max_age: int) -> str:
    # Path limited to the callback: the nonce travels only where it is checked.
    return (
        f"{binding_cookie_name(state)}={nonce}; Max-Age={max_age}; Path={path};"
        " HttpOnly; Secure; SameSite=Lax"
    )


def start_authorization(
    settings: Settings, *, scheme: str, host: str, return_to: str | None
) -> StartResult:
    return_path = safe_return_to(return_to)
    callback = redirect_uri(settings, scheme=scheme, host=host)
    client_id = get_client_credentials(settings).client_id
    verifier = states.random_token() if settings.pkce_enabled else None
    nonce = states.random_token()
    record = states.issue(
        settings.state_table,
        binding=states.binding_hash(nonce),
        redirect_uri=callback,
        code_verifier=verifier,
        return_to=return_path,
        now=int(time.time()),
        ttl_seconds=settings.state_ttl_seconds,
    )
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": callback,
        "state": record.state,
        "scope": settings.scope,
    }
    if verifier:
        query["code_challenge"] = states.pkce_challenge(verifier)
        query["code_challenge_method"] = "S256"
    return StartResult(
        authorise_url=f"{settings.capsule_base_url}/oauth/authorise?{urlencode(query)}",
        binding_cookie=binding_cookie(
            record.state,
            nonce,
            path=urlsplit(callback).path or "/",
            max_age=settings.state_ttl_seconds,
        ),
    )
