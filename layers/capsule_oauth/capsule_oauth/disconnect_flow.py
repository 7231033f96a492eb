"""Disconnect: revoke the grant at Capsule, then forget the tokens (the record stays).

Revoking first means a Capsule fault changes nothing here: the caller can try again, and
the connection keeps working meanwhile. Connecting again later makes it active again.
"""

from __future__ import annotations

import time
import uuid

from capsule_oauth import config, connections, crypto, oauth
from capsule_oauth.config import Settings
from capsule_oauth.connections import Connection
from capsule_oauth.observability import count, logger
from capsule_oauth.tokens import ConnectionNotFound, TokenUnavailable, forget


def disconnect(connection_id: str, *, settings: Settings | None = None) -> Connection:
    """Revoke at Capsule and mark the connection ``disconnected``; return it as stored now.

    Raises ConnectionNotFound, TokenUnavailable (a refresh holds it: try again shortly) or a
    CapsuleError (Capsule could not revoke: nothing changed, try again).
    """
    settings = settings or config.settings()
    table = settings.connections_table
    owner = f"disconnect:{uuid.uuid4().hex}"
    now = int(time.time())
    try:
        current = connections.acquire_lease(
            table, connection_id, owner=owner, now=now, lease_seconds=settings.lease_seconds
        )
    except connections.LeaseNotAcquired:
        raise TokenUnavailable(
            f"connection {connection_id} is being refreshed; try again shortly"
        ) from None
    if current is None:
        raise ConnectionNotFound(f"no Capsule connection {connection_id!r}; nothing to disconnect")
    try:
        if current.status == connections.DISCONNECTED:
            connections.release_lease(table, connection_id, owner=owner)
            return current
        if current.tokens:
            stored = crypto.unseal(settings.token_key_id, connection_id, current.tokens)
            oauth.revoke(settings, token=stored.refresh_token)
    except BaseException:
        connections.release_lease(table, connection_id, owner=owner)
        raise
    updated = connections.mark_disconnected(table, current, owner=owner, now=int(time.time()))
    forget(connection_id)
    count("ConnectionDisconnected")
    logger.info("Capsule connection disconnected", extra={"connection_id": connection_id})
    return updated
