"""Capsule CRM OAuth 2.0 connector: connect Capsule accounts and keep their tokens fresh.

For the rest of an integration, two names matter::

    from capsule_oauth import CapsuleClient, get_access_token

    CapsuleClient(connection_id).get("/parties", params={"perPage": 100})
    get_access_token(connection_id)  # a valid bearer token, refreshed when near expiry

and the management API's operations are here too: ``get_connection``, ``list_connections``,
``disconnect`` (and ``create_connect_session``, ``confirm_connection``).

They are loaded on first use, so a handler that imports one module of this package does
not pay for the HTTP stack it does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capsule_oauth.client import CapsuleClient
    from capsule_oauth.errors import (
        CapsuleAPIError,
        CapsuleError,
        CapsuleRateLimited,
        CapsuleUnavailable,
        ConnectionChanged,
        ConnectionNotFound,
        InvalidOwner,
        OwnerMismatch,
        ReauthorizationRequired,
        TokenUnavailable,
    )
    from capsule_oauth.flows.confirm import confirm_connection
    from capsule_oauth.flows.connections import get_connection, list_connections
    from capsule_oauth.flows.disconnect import disconnect
    from capsule_oauth.flows.sessions import create_connect_session
    from capsule_oauth.tokens import get_access_token

_EXPORTS = {
    "CapsuleClient": "capsule_oauth.client",
    "disconnect": "capsule_oauth.flows.disconnect",
    "get_connection": "capsule_oauth.flows.connections",
    "list_connections": "capsule_oauth.flows.connections",
    "InvalidOwner": "capsule_oauth.errors",
    "create_connect_session": "capsule_oauth.flows.sessions",
    "confirm_connection": "capsule_oauth.flows.confirm",
    "OwnerMismatch": "capsule_oauth.errors",
    "get_access_token": "capsule_oauth.tokens",
    "ConnectionNotFound": "capsule_oauth.errors",
    "ConnectionChanged": "capsule_oauth.errors",
    "ReauthorizationRequired": "capsule_oauth.errors",
    "TokenUnavailable": "capsule_oauth.errors",
    "CapsuleError": "capsule_oauth.errors",
    "CapsuleAPIError": "capsule_oauth.errors",
    "CapsuleRateLimited": "capsule_oauth.errors",
    "CapsuleUnavailable": "capsule_oauth.errors",
}

__all__ = [
    "CapsuleAPIError",
    "CapsuleClient",
    "CapsuleError",
    "CapsuleRateLimited",
    "CapsuleUnavailable",
    "ConnectionChanged",
    "ConnectionNotFound",
    "InvalidOwner",
    "OwnerMismatch",
    "ReauthorizationRequired",
    "TokenUnavailable",
    "confirm_connection",
    "create_connect_session",
    "disconnect",
    "get_access_token",
    "get_connection",
    "list_connections",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'capsule_oauth' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
