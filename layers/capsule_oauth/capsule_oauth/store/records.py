"""What a connection record holds, and who connected: the shapes the connection store reads
and writes, without the store (``store/connections.py`` owns the table and the key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from capsule_oauth import owners

PENDING = "pending"  # saved, waiting for the app's confirm: never served, refreshed or evented
ACTIVE = "active"
NEEDS_REAUTH = "needs_reauth"
DISCONNECTED = "disconnected"
HOOKS_OFF = "off"


@dataclass(frozen=True)
class Connection:
    connection_id: str
    status: str
    version: int
    expires_at: int
    tokens: bytes = field(repr=False)
    subdomain: str = ""
    site_name: str = ""
    site_url: str = ""
    user_id: str = ""
    user_name: str = ""
    username: str = ""
    scope: str = ""
    refresh_due_at: int | None = None
    lease_owner: str | None = None
    lease_expires_at: int | None = None
    failure_count: int = 0
    last_error: str | None = None
    last_error_at: int | None = None
    last_refreshed_at: int | None = None
    connected_at: int | None = None
    created_at: int = 0
    updated_at: int = 0
    owner: str = owners.ANONYMOUS  # items saved before owners existed have none
    token_lifetime: int = 0  # expires_in of the stored access token (0: not recorded)
    disconnect_reason: str | None = None  # "revoked" or "forgotten" (forced, not revoked)
    result_hash: str | None = None  # SHA-256 of the capsule_result that can confirm it
    # Capsule's token endpoint answered 429: no refresh of this connection before this time.
    rate_limited_until: int | None = None
    # Capsule REST hooks (flows/hooks.py): the hook token only as its SHA-256, the hook state,
    # the events subscribed, the ids Capsule gave the hooks, and those still to delete.
    hook_token_hash: str | None = None
    hook_status: str = HOOKS_OFF
    hook_events: tuple[str, ...] = ()
    hook_ids: tuple[str, ...] = ()
    hook_stale_ids: tuple[str, ...] = ()
    hook_base_url: str | None = None
    hooks_checked_at: int | None = None
    # Set by acquire_lease: the lease was another worker's, lapsed, and is ours now. That
    # worker may still be waiting on Capsule with a rotation that made our refresh token old.
    lease_taken_over: bool = False

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Connection:
        def s(name: str) -> str | None:
            value = item.get(name)
            return value["S"] if value else None

        def n(name: str) -> int | None:
            value = item.get(name)
            return int(value["N"]) if value else None

        def strings(name: str) -> tuple[str, ...]:
            value = item.get(name)
            return tuple(entry["S"] for entry in value["L"]) if value else ()

        tokens = item["tokens"]["B"] if "tokens" in item else b""  # none once disconnected
        return cls(
            connection_id=item["connection_id"]["S"],
            status=item["status"]["S"],
            version=n("version") or 0,
            expires_at=n("expires_at") or 0,
            tokens=bytes(tokens),
            subdomain=s("subdomain") or "",
            site_name=s("site_name") or "",
            site_url=s("site_url") or "",
            user_id=s("user_id") or "",
            user_name=s("user_name") or "",
            username=s("username") or "",
            scope=s("scope") or "",
            refresh_due_at=n("refresh_due_at"),
            lease_owner=s("lease_owner"),
            lease_expires_at=n("lease_expires_at"),
            failure_count=n("failure_count") or 0,
            last_error=s("last_error"),
            last_error_at=n("last_error_at"),
            last_refreshed_at=n("last_refreshed_at"),
            connected_at=n("connected_at"),
            created_at=n("created_at") or 0,
            updated_at=n("updated_at") or 0,
            owner=s("owner") or owners.ANONYMOUS,
            token_lifetime=n("token_lifetime") or 0,
            disconnect_reason=s("disconnect_reason"),
            result_hash=s("result_hash"),
            rate_limited_until=n("rate_limited_until"),
            hook_token_hash=s("hook_token_hash"),
            hook_status=s("hook_status") or HOOKS_OFF,
            hook_events=strings("hook_events"),
            hook_ids=strings("hook_ids"),
            hook_stale_ids=strings("hook_stale_ids"),
            hook_base_url=s("hook_base_url"),
            hooks_checked_at=n("hooks_checked_at"),
        )


@dataclass(frozen=True)
class Identity:
    """Who and where, as Capsule reports it after the code exchange."""

    subdomain: str
    site_name: str
    site_url: str
    user_id: str
    user_name: str
    username: str
    owner: str = owners.ANONYMOUS
    existed: bool = False  # after saving: whether this connection was there before

    @property
    def connection_id(self) -> str:
        return owners.connection_id_for(self.owner, self.subdomain, self.user_id)

    @property
    def label(self) -> str:
        return f"{self.user_name} on {self.site_name}"


@dataclass(frozen=True)
class Saved:
    """What saving a new grant found: whether the connection existed, and its former tokens."""

    existed: bool
    previous_tokens: bytes | None = field(default=None, repr=False)
    pending: bool = False  # saved as a new connection waiting for the app's confirm


def refresh_due_at(expires_at: int, expires_in: int, lead_seconds: int) -> int:
    """When to refresh: ``lead_seconds`` before expiry, or halfway for short-lived tokens."""
    return expires_at - min(lead_seconds, expires_in // 2)
