"""Disconnect: delete the REST hooks and revoke the grant at Capsule, then forget the tokens
(the record stays).

Revoking first means a Capsule fault changes nothing here: the caller can try again, and
the connection keeps working meanwhile; ``force`` forgets the tokens anyway. Connecting
again later makes it active again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from capsule_oauth import config
from capsule_oauth.capsule import token_endpoint
from capsule_oauth.config import Settings
from capsule_oauth.errors import (
    CapsuleError,
    ConnectionChanged,
    ConnectionNotFound,
    LeaseNotAcquired,
    StaleWrite,
    TokenDecryptionError,
    TokenUnavailable,
)
from capsule_oauth.flows.hooks import resubscribe_soon, unsubscribe_hooks
from capsule_oauth.observability import count, logger
from capsule_oauth.store.connections import DISCONNECTED, ConnectionStore
from capsule_oauth.store.crypto import TokenPair
from capsule_oauth.tokens import forget


@dataclass(frozen=True)
class Disconnection:
    """What ``disconnect`` did. ``revoked``: Capsule revoked the grant in this call;
    ``forgotten``: this call forgot the tokens here (False when already disconnected)."""

    connection_id: str
    status: str
    revoked: bool
    forgotten: bool


def _revoke_both(settings: Settings, tokens: TokenPair) -> None:
    """Revoke the refresh token (the grant), then the access token it issued."""
    token_endpoint.revoke(settings, token=tokens.refresh_token)
    token_endpoint.revoke(
        settings,
        token=tokens.access_token,
        token_type_hint="access_token",  # noqa: S106 - an RFC 7009 hint name
    )


def disconnect(
    connection_id: str, force: bool = False, *, settings: Settings | None = None
) -> Disconnection:
    """Revoke the grant at Capsule, then mark the connection ``disconnected``.

    Already disconnected: nothing to do, and no error. When Capsule cannot revoke (down,
    refusing, or offering no revocation endpoint at all), a CapsuleError is raised and
    nothing changes, unless ``force``: then the tokens are forgotten here anyway and the
    result says ``revoked=False`` (the grant may live on at Capsule until it expires).

    Raises ConnectionNotFound, TokenUnavailable (a refresh holds it: try again shortly),
    ConnectionChanged (a reconnect saved a new grant meanwhile: the connection is active with
    it; read it and disconnect again if that is still wanted) or, without ``force``, a
    CapsuleError.
    """
    settings = settings or config.settings()
    store = ConnectionStore(settings)
    owner = f"disconnect:{uuid.uuid4().hex}"
    try:
        current = store.acquire_lease(connection_id, owner=owner, now=int(time.time()))
    except LeaseNotAcquired:
        raise TokenUnavailable(
            f"connection {connection_id} is being refreshed; try again shortly", retry_after=1
        ) from None
    if current is None:
        raise ConnectionNotFound(f"no Capsule connection {connection_id!r}; nothing to disconnect")
    revoked = False
    try:
        if current.status == DISCONNECTED:
            store.release_lease(connection_id, owner=owner)
            return Disconnection(connection_id, DISCONNECTED, revoked=False, forgotten=False)
        if current.tokens:
            try:
                tokens = store.tokens(current)
                # Hooks first: once the grant is revoked, they cannot be deleted any more.
                unsubscribe_hooks(settings, current, tokens.access_token)
                _revoke_both(settings, tokens)
                revoked = True
            except (CapsuleError, TokenDecryptionError) as error:
                if not force:
                    # Still connected, maybe without its hooks: the next scheduled run
                    # subscribes them again.
                    resubscribe_soon(settings, current)
                    raise
                count("DisconnectForced")
                logger.warning(
                    "Capsule did not revoke; forgetting the tokens here anyway (forced)",
                    extra={"connection_id": connection_id, "error_class": error.reason},
                )
    except BaseException:
        store.release_lease(connection_id, owner=owner)
        raise
    try:
        updated = store.mark_disconnected(
            current, owner=owner, now=int(time.time()), reason="revoked" if revoked else "forgotten"
        )
    except StaleWrite:
        # A reconnect saved a new grant meanwhile (taking the lease with it): the connection
        # is the reconnect's now; the grant revoked above was the one it replaced.
        store.release_lease(connection_id, owner=owner)
        forget(connection_id)
        count("DisconnectRaced")
        logger.warning(
            "Connection changed while disconnecting; left as it is now",
            extra={"connection_id": connection_id, "revoked": revoked},
        )
        raise ConnectionChanged(
            f"connection {connection_id} was reconnected while disconnecting; read it again"
        ) from None
    forget(connection_id)
    count("ConnectionDisconnected")
    logger.info(
        "Capsule connection disconnected",
        extra={"connection_id": connection_id, "revoked": revoked},
    )
    return Disconnection(connection_id, updated.status, revoked=revoked, forgotten=True)
