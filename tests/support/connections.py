"""Connections as the tests set them up and read them back, and the run that refreshes them.

``seed`` stores a connected account as the callback leaves one (tokens sealed with the
stack's key), so a test can start from "connected" without walking the sign-in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from capsule_oauth.config import Settings
from capsule_oauth.flows import refresh as refresh_flow
from capsule_oauth.store import connections, crypto
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule

T0 = 1_900_000_000
CID = "exampleco:1"


def seed(
    settings: Settings,
    fake: FakeCapsule,
    *,
    connection_id: str = CID,
    expires_at: int = T0 + EXPIRES_IN,
    lead: int = 86_400,
    now: int = T0,
) -> dict[str, Any]:
    """A connected account whose access token expires at ``expires_at``."""
    grant = fake.issue_grant()
    subdomain, user_id = connection_id.split(":")
    connections.ConnectionStore(settings).save_authorized(
        connections.Identity(subdomain, "Example Co.", "", user_id, "Scott Spacey", "scott"),
        crypto.TokenPair(grant["access_token"], grant["refresh_token"]),
        expires_at=expires_at,
        scope="read write",
        refresh_due_at=expires_at - lead,
        now=now,
    )
    return grant


def stored(settings: Settings, connection_id: str = CID) -> connections.Connection:
    connection = connections.ConnectionStore(settings).get(connection_id)
    assert connection is not None
    return connection


def stored_tokens(settings: Settings, connection_id: str = CID) -> crypto.TokenPair:
    return connections.ConnectionStore(settings).tokens(stored(settings, connection_id))


def run_refresh(
    settings: Settings, remaining_ms: Callable[[], int] = lambda: 300_000
) -> refresh_flow.RunReport:
    """One scheduled refresh run, with ``remaining_ms`` as the Lambda's time left."""
    return refresh_flow.refresh_due(settings, remaining_ms=remaining_ms)


def refresh_requests(fake: FakeCapsule) -> list[dict[str, str]]:
    """The refresh-token grants the fake Capsule received, oldest first."""
    return [r for r in fake.token_requests if r["grant_type"] == "refresh_token"]


def seed_owned(
    settings: Settings,
    fake: FakeCapsule,
    owner: str,
    *,
    subdomain: str = "exampleco",
    user_id: str = "1",
    now: int = T0,
) -> tuple[str, dict[str, Any]]:
    """A connection of ``owner``, connected at ``now``: (its connection id, its grant)."""
    grant = fake.issue_grant()
    identity = connections.Identity(
        subdomain, "Example Co.", f"https://{subdomain}.capsulecrm.com", user_id,
        "Scott Spacey", "scott", owner=owner,
    )  # fmt: skip
    connections.ConnectionStore(settings).save_authorized(
        identity,
        crypto.TokenPair(grant["access_token"], grant["refresh_token"]),
        expires_at=now + EXPIRES_IN,
        scope="read write",
        refresh_due_at=now + EXPIRES_IN - 86_400,
        now=now,
    )
    return identity.connection_id, grant


def seed_pending(
    settings: Settings,
    fake: FakeCapsule,
    owner: str = "user-42",
    *,
    now: int = T0,
    result_hash: str = "0" * 64,
) -> tuple[str, dict[str, Any]]:
    """A new connection of ``owner`` waiting for the app's confirm until ``now`` plus
    ConnectConfirmSeconds: (its connection id, its grant)."""
    grant = fake.issue_grant()
    identity = connections.Identity(
        "exampleco", "Example Co.", "https://exampleco.capsulecrm.com", "1", "Scott Spacey",
        "scott", owner=owner,
    )  # fmt: skip
    connections.ConnectionStore(settings).save_authorized(
        identity,
        crypto.TokenPair(grant["access_token"], grant["refresh_token"]),
        expires_at=now + EXPIRES_IN,
        scope="read write",
        refresh_due_at=now + EXPIRES_IN - 86_400,
        now=now,
        pending_until=now + settings.connect_confirm_seconds,
        result_hash=result_hash,
    )
    return identity.connection_id, grant
