"""Connections as the app sees them: what GET /connections and GET /connections/{id} answer,
and ``get_connection`` / ``list_connections`` in Python. Never a token.

The shape is the management API's contract (README, openapi.yaml): times are ISO 8601 UTC,
``status`` is ``pending`` (until the app confirms it), ``active``, ``needs_reauth`` or
``disconnected``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypedDict

from capsule_oauth import config, owners
from capsule_oauth.config import Settings
from capsule_oauth.errors import ConnectionNotFound, InvalidOwner
from capsule_oauth.store.connections import DISCONNECTED, Connection, ConnectionStore


class Site(TypedDict):
    subdomain: str
    name: str
    url: str


class User(TypedDict):
    id: str
    name: str


class LastError(TypedDict):
    reason: str
    at: str | None


class Hooks(TypedDict):
    status: str  # off | active | not_admin | limit_reached | failing
    events: list[str]
    checked_at: str | None


class ConnectionInfo(TypedDict):
    connection_id: str
    owner: str
    status: str
    site: Site
    user: User
    scope: str
    access_token_expires_at: str | None
    last_refreshed_at: str | None
    connected_at: str | None
    last_error: LastError | None
    refresh_failures: int
    hooks: Hooks


def iso(epoch: int | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (``2026-11-28T09:00:00Z``); None stays None."""
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(connection: Connection) -> ConnectionInfo:
    """A connection as the app sees it: who, where, health; never a token."""
    last_error: LastError | None = None
    if connection.last_error:
        last_error = {"reason": connection.last_error, "at": iso(connection.last_error_at)}
    return {
        "connection_id": connection.connection_id,
        "owner": connection.owner,
        "status": connection.status,
        "site": {
            "subdomain": connection.subdomain,
            "name": connection.site_name,
            "url": connection.site_url,
        },
        "user": {"id": connection.user_id, "name": connection.user_name},
        "scope": connection.scope,
        # A disconnected connection has no token left to expire.
        "access_token_expires_at": (
            None if connection.status == DISCONNECTED else iso(connection.expires_at)
        ),
        "last_refreshed_at": iso(connection.last_refreshed_at),
        "connected_at": iso(connection.connected_at or connection.created_at),
        "last_error": last_error,
        "refresh_failures": connection.failure_count,
        "hooks": {
            "status": connection.hook_status,
            "events": list(connection.hook_events) if connection.hook_status != "off" else [],
            "checked_at": iso(connection.hooks_checked_at),
        },
    }


def get_connection(connection_id: str, *, settings: Settings | None = None) -> ConnectionInfo:
    """One connection as the app sees it. Raises ConnectionNotFound."""
    connection = ConnectionStore(settings or config.settings()).get(connection_id)
    if connection is None:
        raise ConnectionNotFound(f"no Capsule connection {connection_id!r}")
    return describe(connection)


def list_connections(owner: str, *, settings: Settings | None = None) -> list[ConnectionInfo]:
    """Every connection of ``owner`` (one Query on the owner index), by connection id.

    Raises InvalidOwner when ``owner`` is not an owner id.
    """
    if not owners.is_valid(owner):
        raise InvalidOwner(owners.RULE)
    found = ConnectionStore(settings or config.settings()).list_for_owner(owner)
    return [describe(connection) for connection in sorted(found, key=_by_id)]


def _by_id(connection: Connection) -> str:
    return connection.connection_id
