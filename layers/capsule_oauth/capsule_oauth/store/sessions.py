"""Connect sessions: the app's backend says who is connecting; the link it gets starts sign-in.

A session lives in the state table under a key derived from its token, so the table never
holds a usable link. It may start sign-in any number of times while it lives (a person
retries) and is finished by its first successful connection: the callback claims it before
the code exchange and gives the claim back if connecting then fails.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from capsule_oauth.config import Settings
from capsule_oauth.errors import ConnectSessionUnusable
from capsule_oauth.observability import logger
from capsule_oauth.store import aws
from capsule_oauth.store.states import SessionLink

_PREFIX = "session#"
_TOKEN_BYTES = 32  # 256 bits


def session_key(token: str) -> str:
    return _PREFIX + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedSession:
    token: str = field(repr=False)
    expires_at: int


class SessionStore:
    """Connect sessions in the state table (TTL on ``expires_at``, expiry also checked here)."""

    def __init__(self, settings: Settings) -> None:
        self._table = settings.state_table
        self._ttl_seconds = settings.connect_session_ttl_seconds
        # The item outlives the session by a sign-in's own lifetime: a sign-in started just
        # before the session expired can still claim it, and its claim is still there after.
        self._keep_seconds = settings.state_ttl_seconds

    def create(
        self,
        owner: str,
        *,
        return_url: str | None,
        reconnect_connection_id: str | None,
        now: int,
        reconnect_label: str | None = None,
    ) -> CreatedSession:
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        created = CreatedSession(token, now + self._ttl_seconds)
        item: dict[str, Any] = {
            "state": {"S": session_key(token)},
            "kind": {"S": "connect_session"},
            "owner": {"S": owner},
            "created_at": {"N": str(now)},
            "session_expires_at": {"N": str(created.expires_at)},
            "expires_at": {"N": str(created.expires_at + self._keep_seconds)},  # TTL
        }
        if return_url:
            item["return_url"] = {"S": return_url}
        if reconnect_connection_id:
            item["reconnect_connection_id"] = {"S": reconnect_connection_id}
        if reconnect_label:
            item["reconnect_label"] = {"S": reconnect_label}
        aws.dynamodb().put_item(
            TableName=self._table,
            Item=item,
            ConditionExpression="attribute_not_exists(#s)",
            ExpressionAttributeNames={"#s": "state"},
        )
        return created

    def live(self, token: str, *, now: int) -> SessionLink:
        """The session behind ``token`` if it can start a sign-in now."""
        if not token or len(token) > 128:
            raise ConnectSessionUnusable("SessionUnknown")
        return self.live_by_key(session_key(token), now=now)

    def live_by_key(self, key: str, *, now: int) -> SessionLink:
        """The session stored under ``key`` if it can start a sign-in now (a "Try again")."""
        item = (
            aws.dynamodb()
            .get_item(TableName=self._table, Key={"state": {"S": key}}, ConsistentRead=True)
            .get("Item")
        )
        if not item or item.get("kind", {}).get("S") != "connect_session":
            raise ConnectSessionUnusable("SessionUnknown")
        return_url = item.get("return_url", {}).get("S")
        if int(item["session_expires_at"]["N"]) <= now:
            raise ConnectSessionUnusable("SessionExpired", return_url=return_url)
        if "finished_at" in item:
            raise ConnectSessionUnusable("SessionFinished", return_url=return_url)
        return SessionLink(
            key=key,
            owner=item["owner"]["S"],
            return_url=return_url,
            reconnect_connection_id=item.get("reconnect_connection_id", {}).get("S"),
            reconnect_label=item.get("reconnect_label", {}).get("S"),
        )

    def claim(self, key: str, *, state_hash: str, now: int) -> None:
        """Mark the session finished by this sign-in, unless another one finished it first."""
        dynamodb = aws.dynamodb()
        try:
            dynamodb.update_item(
                TableName=self._table,
                Key={"state": {"S": key}},
                UpdateExpression="SET finished_at = :now, finished_by = :by",
                # Only a session that is still there: one TTL deleted cannot be claimed again.
                ConditionExpression="attribute_exists(#s) AND attribute_not_exists(finished_at)",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":now": {"N": str(now)}, ":by": {"S": state_hash}},
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            raise ConnectSessionUnusable("SessionFinished") from None

    def release(self, key: str, *, state_hash: str) -> None:
        """Give back this sign-in's claim (it failed): the person may try again. Best effort:
        the sign-in has already failed, and its own error is the one to report."""
        dynamodb = aws.dynamodb()
        try:
            dynamodb.update_item(
                TableName=self._table,
                Key={"state": {"S": key}},
                UpdateExpression="REMOVE finished_at, finished_by",
                ConditionExpression="finished_by = :by",
                ExpressionAttributeValues={":by": {"S": state_hash}},
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            return
        except Exception as error:
            logger.warning(
                "Could not give the connect session back", extra={"error": type(error).__name__}
            )


def state_hash(state: str) -> str:
    """What a session records of the sign-in that finished it (never the state itself)."""
    return hashlib.sha256(state.encode()).hexdigest()
