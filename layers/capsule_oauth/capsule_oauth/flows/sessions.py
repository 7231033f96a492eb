"""Create a connect session: the link the app's backend hands one of its users.

``create_connect_session`` is what both POST /connect-sessions and Python code with the
layer call. The link starts at this API's /auth/start; it is built from the start URL the
caller knows (the route: its own domain), else CONNECT_START_URL (the stack's StartUrl
output), else the origin of RedirectUri.
"""

from __future__ import annotations

import time
from typing import TypedDict
from urllib.parse import urlencode, urlsplit

from capsule_oauth import config, owners
from capsule_oauth.config import Settings
from capsule_oauth.errors import (
    ConfigError,
    ConnectionNotFound,
    ConnectionOwnedElsewhere,
    InvalidConnectSessionRequest,
)
from capsule_oauth.store.connections import ConnectionStore
from capsule_oauth.store.sessions import SessionStore
from capsule_oauth.web.return_urls import InvalidReturnUrl, check_return_url

START_PATH = "/auth/start"


class ConnectSession(TypedDict):
    connect_url: str
    expires_at: int


def start_url_for(settings: Settings, *, origin: str | None = None) -> str:
    """Where connect links start, as a request to the API shows it: RedirectUri's origin (a
    custom domain) wins over ``origin`` (``scheme://host`` of the request); without either,
    CONNECT_START_URL. (In Python, CONNECT_START_URL comes first: create_connect_session.)"""
    if settings.redirect_uri:
        parts = urlsplit(settings.redirect_uri)
        return f"{parts.scheme}://{parts.netloc}{START_PATH}"
    if origin:
        return f"{origin}{START_PATH}"
    if settings.connect_start_url:
        return settings.connect_start_url
    raise ConfigError(
        "cannot tell where connect links start: set CONNECT_START_URL to the stack's StartUrl"
        " output (or set the stack's RedirectUri parameter)"
    )


def create_connect_session(
    owner: str,
    return_url: str | None = None,
    reconnect_connection_id: str | None = None,
    *,
    settings: Settings | None = None,
    start_url: str | None = None,
) -> ConnectSession:
    """A connect link for ``owner``: ``{"connect_url", "expires_at"}`` (epoch seconds).

    With ConfirmConnections (the default) ``return_url`` is required: the sign-in comes back
    there with ``capsule_result``, which the app confirms (``confirm_connection``).

    Raises InvalidConnectSessionRequest (bad owner or return URL, or none: reason
    ``return_url_required``), ConnectionNotFound (no
    such connection to reconnect), ConnectionOwnedElsewhere (it is another owner's) or
    ConfigError (no start URL known).
    """
    settings = settings or config.settings()
    if not owners.is_valid(owner):
        raise InvalidConnectSessionRequest("invalid_owner", owners.RULE)
    if return_url is None and settings.confirm_connections:
        raise InvalidConnectSessionRequest(
            "return_url_required",
            "return_url is required: the app confirms each new connection on it"
            " (ConfirmConnections), with the capsule_result the sign-in brings back.",
        )
    if return_url is not None:
        if not isinstance(return_url, str):
            raise InvalidConnectSessionRequest("invalid_request", "return_url must be a string")
        try:
            check_return_url(return_url, settings.allowed_return_origins)
        except InvalidReturnUrl as error:
            raise InvalidConnectSessionRequest("invalid_return_url", str(error)) from None
    label = None
    if reconnect_connection_id is not None:
        if not owners.is_connection_id(reconnect_connection_id):
            raise InvalidConnectSessionRequest(
                "invalid_request", "reconnect_connection_id must be a connection id"
            )
        existing = ConnectionStore(settings).get(reconnect_connection_id)
        if existing is None:
            raise ConnectionNotFound(f"no connection {reconnect_connection_id!r} to reconnect")
        if existing.owner != owner:
            raise ConnectionOwnedElsewhere(
                f"connection {reconnect_connection_id!r} belongs to another owner"
            )
        label = f"{existing.user_name} on {existing.site_name}"
    base = start_url or settings.connect_start_url or start_url_for(settings)
    created = SessionStore(settings).create(
        owner,
        return_url=return_url or None,
        reconnect_connection_id=reconnect_connection_id,
        now=int(time.time()),
        reconnect_label=label,
    )
    return {
        "connect_url": f"{base}?{urlencode({'session': created.token})}",
        "expires_at": created.expires_at,
    }
