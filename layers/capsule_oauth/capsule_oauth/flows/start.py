"""Start: issue a state bound to this browser and send the person to Capsule to approve.

Kept free of ``requests`` so the start function's cold start stays small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from capsule_oauth.capsule.credentials import get_client_credentials
from capsule_oauth.config import Settings
from capsule_oauth.errors import ConnectSessionUnusable, InvalidStartRequest
from capsule_oauth.store.sessions import SessionStore
from capsule_oauth.store.states import SessionLink, StateStore
from capsule_oauth.web import binding

CALLBACK_PATH = "/auth/callback"
START_PATH = "/auth/start"
_MAX_RETURN_TO = 512


@dataclass(frozen=True)
class StartResult:
    authorise_url: str = field(repr=False)
    binding_cookie: str = field(repr=False)


def redirect_uri(settings: Settings, *, scheme: str, host: str) -> str:
    """The registered callback URL: the fixed setting, or this API's own /auth/callback."""
    if settings.redirect_uri:
        return settings.redirect_uri
    if scheme not in {"http", "https"} or not host or any(c in host for c in "/\\@?# "):
        raise InvalidStartRequest("UnknownOrigin")
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
        raise InvalidStartRequest("UnsafeReturnTo")
    return value


def moved_start(settings: Settings, *, host: str, raw_query: str) -> str | None:
    """With a fixed RedirectUri (a custom domain), the start URL on that host when this request
    came to another one: the binding cookie must be set where the callback will read it."""
    if not settings.redirect_uri:
        return None
    parts = urlsplit(settings.redirect_uri)
    if parts.netloc.lower() == host.lower():
        return None
    return f"{parts.scheme}://{parts.netloc}{START_PATH}" + (f"?{raw_query}" if raw_query else "")


def _session(settings: Settings, token: str | None, return_to: str | None) -> SessionLink | None:
    """The connect session this start belongs to; None only where sessions are optional."""
    if token is None:
        if settings.require_connect_session:
            raise InvalidStartRequest("SessionRequired")
        return None
    if return_to:
        raise InvalidStartRequest("SessionWithReturnTo")
    try:
        return SessionStore(settings).live(token, now=int(time.time()))
    except ConnectSessionUnusable as unusable:
        raise InvalidStartRequest(unusable.reason, return_url=unusable.return_url) from None


def start_authorization(
    settings: Settings,
    *,
    scheme: str,
    host: str,
    return_to: str | None,
    session: str | None = None,
) -> StartResult:
    """Raises InvalidStartRequest when the request cannot start a sign-in."""
    return_path = safe_return_to(return_to)
    link = _session(settings, session, return_path)
    return begin(settings, scheme=scheme, host=host, return_to=return_path, link=link)


def begin(
    settings: Settings,
    *,
    scheme: str,
    host: str,
    return_to: str | None,
    link: SessionLink | None,
) -> StartResult:
    """A new state for this browser (a new nonce cookie) and the way to Capsule: a start,
    or a "Try again" that re-opens the same connect session."""
    return_path = return_to
    callback = redirect_uri(settings, scheme=scheme, host=host)
    client_id = get_client_credentials(settings).client_id
    verifier = binding.random_token() if settings.pkce_enabled else None
    nonce = binding.random_token()
    record = StateStore(settings).issue(
        binding.random_token(),
        binding=binding.binding_hash(nonce),
        redirect_uri=callback,
        code_verifier=verifier,
        return_to=return_path,
        now=int(time.time()),
        session=link,
    )
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": callback,
        "state": record.state,
        "scope": settings.scope,
    }
    if verifier:
        query["code_challenge"] = binding.pkce_challenge(verifier)
        query["code_challenge_method"] = "S256"
    return StartResult(
        authorise_url=f"{settings.capsule_base_url}/oauth/authorise?{urlencode(query)}",
        binding_cookie=binding.binding_cookie(
            record.state,
            nonce,
            path=urlsplit(callback).path or "/",
            max_age=settings.state_ttl_seconds,
        ),
    )
