"""The API's answers as dataclasses, field for field as openapi.yaml describes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ConnectSession:
    """A connect link for one owner: send the person's browser to ``connect_url``."""

    connect_url: str = field(repr=False)  # its session token lets anyone start sign-in
    expires_at: int  # epoch seconds

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ConnectSession:
        return cls(connect_url=str(body["connect_url"]), expires_at=int(body["expires_at"]))


@dataclass(frozen=True)
class Site:
    subdomain: str
    name: str
    url: str


@dataclass(frozen=True)
class User:
    id: str
    name: str


@dataclass(frozen=True)
class LastError:
    reason: str
    at: str | None  # ISO 8601 UTC


@dataclass(frozen=True)
class Connection:
    """One connection, never a token. Times are ISO 8601 UTC strings."""

    connection_id: str
    owner: str
    status: str  # "active", "needs_reauth", "disconnected", ...
    site: Site
    user: User
    scope: str
    access_token_expires_at: str | None
    last_refreshed_at: str | None
    connected_at: str | None
    last_error: LastError | None
    refresh_failures: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Connection:
        site, user, error = body["site"], body["user"], body.get("last_error")
        return cls(
            connection_id=str(body["connection_id"]),
            owner=str(body["owner"]),
            status=str(body["status"]),
            site=Site(str(site["subdomain"]), str(site["name"]), str(site["url"])),
            user=User(str(user["id"]), str(user["name"])),
            scope=str(body["scope"]),
            access_token_expires_at=body.get("access_token_expires_at"),
            last_refreshed_at=body.get("last_refreshed_at"),
            connected_at=body.get("connected_at"),
            last_error=LastError(str(error["reason"]), error.get("at")) if error else None,
            refresh_failures=int(body.get("refresh_failures", 0)),
        )


@dataclass(frozen=True)
class AccessToken:
    """A valid Capsule access token; ``repr`` never shows it."""

    access_token: str = field(repr=False)
    token_type: str
    expires_at: int  # epoch seconds
    api_base_url: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> AccessToken:
        return cls(
            access_token=str(body["access_token"]),
            token_type=str(body["token_type"]),
            expires_at=int(body["expires_at"]),
            api_base_url=str(body["api_base_url"]),
        )


@dataclass(frozen=True)
class Disconnected:
    """What a disconnect did: revoked at Capsule (False only when forced), tokens forgotten."""

    revoked: bool
    forgotten: bool
