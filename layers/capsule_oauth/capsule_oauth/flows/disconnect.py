"""Disconnect: revoke the grant at Capsule, then forget the tokens (the record stays).

Revoking first means a Capsule fault changes nothing here: the caller can try again, and
the connection keeps working meanwhile. Connecting again later makes it active again.
"""

from __future__ import annotations

import time
import uuid

from capsule_oauth import config
from capsule_oauth.capsule import token_endpoint
from capsule_oauth.config import Settings
from capsule_oauth.errors import (
    ConnectionNotFound,
    LeaseNotAcquired,
    RevocationUnsupported,
    TokenUnavailable,
)
from capsule_oauth.observability import count, logger
from capsule_oauth.store.connections import DISCONNECTED, Connection, ConnectionStore
from capsule_oauth.store.crypto import TokenPair
from capsule_oauth.tokens import forget


def _revoke_both(settings: Settings, tokens: TokenPair, connection_id: str) -> None:
    """Revoke the refresh token (the grant) and the access token. When Capsule offers no
    revocation endpoint at all, retrying can never succeed: say so, and forget them anyway."""
    try:
        token_endpoint.revoke(settings, token=tokens.refresh_token)
        token_endpoint.revoke(
            settings,
            token=tokens.access_token,
            token_type_hint="access_token",  # noqa: S106 - an RFC 7009 hint name
        )
    except RevocationUnsupported as unsupported:
        count("RevocationUnsupported")
        logger.warning(
            "Capsule cannot revoke; forgetting the tokens here only",
            extra={"connection_id": connection_id, "problem": str(unsupported)},
        )


def disconnect(connection_id: str, *, settings: Settings | None = None) -> Connection:
    """Revoke at Capsule and mark the connection ``disconnected``; return it as stored now.

    Raises ConnectionNotFound, TokenUnavailable (a refresh holds it: try again shortly) or a
    CapsuleError (Capsule could not revoke: nothing changed, try again). Where Capsule has
    no revocation endpoint at all, the tokens are forgotten here and a warning says so.
    """
    settings = settings or config.settings()
    store = ConnectionStore(settings)
    owner = f"disconnect:{uuid.uuid4().hex}"
    now = int(time.time())
    try:
        current = store.acquire_lease(connection_id, owner=owner, now=now)
    except LeaseNotAcquired:
        raise TokenUnavailable(
            f"connection {connection_id} is being refreshed; try again shortly"
        ) from None
    if current is None:
        raise ConnectionNotFound(f"no Capsule connection {connection_id!r}; nothing to disconnect")
    try:
        if current.status == DISCONNECTED:
            store.release_lease(connection_id, owner=owner)
            return current
        if current.tokens:
            _revoke_both(settings, store.tokens(current), connection_id)
    except BaseException:
        store.release_lease(connection_id, owner=owner)
        raise
    updated = store.mark_disconnected(current, owner=owner, now=int(time.time()))
    forget(connection_id)
    count("ConnectionDisconnected")
    logger.info("Capsule connection disconnected", extra={"connection_id": connection_id})
    return updated
