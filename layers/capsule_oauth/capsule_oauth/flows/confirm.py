"""Confirm: the app ties a new connection to the user it has signed in, or it is discarded.

A sign-in from a connect link ends on the app's return URL with a one-time
``capsule_result``. A new connection stays ``pending`` (never served, refreshed or evented)
until the app, on the request that carried the result, confirms it for the user it has
signed in then. Only if that is the owner whose link started the sign-in does the
connection become active; otherwise (a link forwarded to someone else) its grant is
revoked and it is deleted. Unconfirmed ones are discarded the same way by the scheduled
run once ``ConnectConfirmSeconds`` are over.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from capsule_oauth import config, owners
from capsule_oauth.capsule import token_endpoint
from capsule_oauth.config import Settings
from capsule_oauth.errors import (
    CapsuleError,
    ConnectionNotFound,
    InvalidOwner,
    OwnerMismatch,
    StaleWrite,
    TokenDecryptionError,
)
from capsule_oauth.flows.connections import ConnectionInfo, describe
from capsule_oauth.flows.hooks import subscribe_hooks
from capsule_oauth.observability import count, count_by, logger
from capsule_oauth.store import results
from capsule_oauth.store.connections import (
    ACTIVE,
    PENDING,
    Connection,
    ConnectionStore,
    refresh_due_at,
)
from capsule_oauth.store.results import ResultStore

# A pending connection whose grant could not be revoked is tried again this much later.
DISCARD_RETRY_SECONDS = 900


def _not_found() -> ConnectionNotFound:
    return ConnectionNotFound("no live capsule_result like this: unknown, expired or used up")


def confirm_connection(
    result: str, owner: str, *, settings: Settings | None = None, api_base_url: str | None = None
) -> ConnectionInfo:
    """Confirm the connection a ``capsule_result`` names for ``owner``, the app's user signed
    in on the request that carried it: the connection as ``get_connection`` shows it.

    Confirming again with the same result and owner answers the same and changes nothing.
    Raises OwnerMismatch (the result came from another owner's link: the pending connection
    is discarded, the result dead), ConnectionNotFound (unknown, expired or discarded) or
    InvalidOwner. A connection made active here gets its REST hooks (``api_base_url``: where
    their deliveries go, ``https://<api>``; without it, the one ``RedirectUri`` names).
    """
    settings = settings or config.settings()
    if not owners.is_valid(owner):
        raise InvalidOwner(owners.RULE)
    if not results.well_formed(result):
        raise _not_found()
    now = int(time.time())
    hashed = results.result_hash(result)
    found = ResultStore(settings).get(hashed, now=now)
    if found is None:
        raise _not_found()
    store = ConnectionStore(settings)
    connection = store.get(found.connection_id)
    if not hmac.compare_digest(found.owner.encode(), owner.encode()):
        ResultStore(settings).kill(hashed)
        if connection is not None and _pending_for(connection, hashed):
            discard_pending(settings, connection, now=now, retry_at=now)
        count("ConfirmOwnerMismatch")
        logger.warning(
            "A connect result was confirmed for another owner; its connection is discarded",
            extra={"connection_id": found.connection_id},
        )
        raise OwnerMismatch("this connection was started from another owner's connect link")
    if connection is None:
        raise _not_found()
    if connection.status == PENDING:
        if not _pending_for(connection, hashed):
            raise _not_found()  # a later sign-in replaced it, or it is being discarded
        connection = activate_pending_connection(settings, connection, now=now)
        subscribe_hooks(connection.connection_id, settings=settings, api_base_url=api_base_url)
        connection = store.get(connection.connection_id) or connection  # with its hooks
    return describe(connection)


def _pending_for(connection: Connection, hashed: str) -> bool:
    return connection.status == PENDING and hmac.compare_digest(
        (connection.result_hash or "").encode(), hashed.encode()
    )


def activate_pending_connection(
    settings: Settings, connection: Connection, *, now: int
) -> Connection:
    """pending -> active: the one place a confirmed connection becomes usable. It joins the
    refresh schedule as any new connection does, and the stream makes "Connection Created"
    of it. Raises ConnectionNotFound if it is no longer this pending connection."""
    store = ConnectionStore(settings)
    due = refresh_due_at(
        connection.expires_at,
        connection.token_lifetime or max(connection.expires_at - now, 0),
        settings.refresh_lead_seconds,
    )
    try:
        active = store.activate(connection, refresh_due_at=due, now=now)
    except StaleWrite:
        again = store.get(connection.connection_id)
        # The same confirm, retried at the same moment, got there first.
        if again and again.status == ACTIVE and again.result_hash == connection.result_hash:
            return again
        raise _not_found() from None
    count("ConnectionConfirmed")
    logger.info("Connection confirmed", extra={"connection_id": connection.connection_id})
    return active


def _revoke_both(settings: Settings, connection: Connection, store: ConnectionStore) -> None:
    tokens = store.tokens(connection)
    token_endpoint.revoke(settings, token=tokens.refresh_token)
    token_endpoint.revoke(
        settings,
        token=tokens.access_token,
        token_type_hint="access_token",  # noqa: S106 - an RFC 7009 hint name
    )


def discard_pending(settings: Settings, connection: Connection, *, now: int, retry_at: int) -> bool:
    """Revoke a pending connection's grant at Capsule and delete it; no event.

    First it is made unconfirmable (its result dropped, fenced on the version read), so no
    confirm can activate tokens being revoked. If Capsule cannot revoke, it stays pending
    until ``retry_at`` and the scheduled run tries again: a grant is never left live with
    nobody holding it. True when it was deleted here.
    """
    store = ConnectionStore(settings)
    try:
        withdrawn = store.withdraw_pending(connection, retry_at=retry_at, now=now)
    except StaleWrite:
        return False  # confirmed, replaced by a new sign-in, or discarded meanwhile
    try:
        _revoke_both(settings, withdrawn, store)
    except CapsuleError as error:
        count_by("PendingDiscardFailed", "reason", error.reason)
        logger.warning(
            "Could not revoke a pending connection's grant; trying again later",
            extra={"connection_id": connection.connection_id, "reason": error.reason},
        )
        return False
    except TokenDecryptionError:  # nothing anyone could revoke: forget it all the same
        logger.warning(
            "A pending connection's tokens cannot be opened; deleting it",
            extra={"connection_id": connection.connection_id},
        )
    deleted = store.delete_pending(withdrawn)
    if deleted:
        count("PendingConnectionDiscarded")
        logger.info(
            "Pending connection discarded", extra={"connection_id": connection.connection_id}
        )
    return deleted


def discard_expired_pending(settings: Settings, *, remaining_ms: Callable[[], int]) -> int:
    """Discard every pending connection whose confirm window is over; the scheduled run's
    first job. One Query on the pending queue: the work follows the number pending, never
    the table's size. Stops when the run's reserve of time is reached."""
    now = int(time.time())
    store = ConnectionStore(settings)
    discarded = 0
    for connection_id in store.pending_due(now=now):
        if remaining_ms() < settings.refresh_min_remaining_ms:
            break
        connection = store.get(connection_id)
        if connection is None or connection.status != PENDING:
            continue
        if (connection.refresh_due_at or 0) > now:
            continue
        try:
            if discard_pending(settings, connection, now=now, retry_at=now + DISCARD_RETRY_SECONDS):
                discarded += 1
        except Exception:  # one connection's fault must not stop the refresh run
            logger.exception(
                "Discarding a pending connection failed", extra={"connection_id": connection_id}
            )
    return discarded
