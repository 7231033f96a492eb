"""Authorization state: issued at start, consumed exactly once at the callback.

A state item lives ``state_ttl_seconds``, under a hash of the state (the table never holds a
usable one). DynamoDB's TTL deletes lazily (up to days later), so expiry is checked in the
consume condition itself. The consume is one conditional write that also requires the
browser binding to match and marks the item used (dropping the PKCE verifier): a wrong
cookie or an expired state changes nothing, and two simultaneous callbacks cannot both
succeed. The used item stays as the sign-in's tombstone: once it is completed it says, for
the browser that completed it only, what was connected, so a reload or a second approval
finds "already connected" instead of a dead end.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any, cast

from capsule_oauth import owners
from capsule_oauth.config import Settings
from capsule_oauth.errors import BindingMismatch, StateExpired, StateUnknown, StateUsed
from capsule_oauth.store import aws

_PREFIX = "state#"


def state_digest(state: str) -> str:
    """What names a state in the table and in the pages' own links (never the state)."""
    return hashlib.sha256(state.encode()).hexdigest()


def _key(digest: str) -> dict[str, Any]:
    return {"state": {"S": _PREFIX + digest}}


@dataclass(frozen=True)
class SessionLink:
    """What a connect session carries into each sign-in it starts."""

    key: str = field(repr=False)  # the session item's key: a hash, never the session token
    owner: str
    return_url: str | None
    reconnect_connection_id: str | None
    reconnect_label: str | None = None  # "<user> on <site>" of the connection to reconnect


@dataclass(frozen=True)
class StateRecord:
    state: str = field(repr=False)
    redirect_uri: str
    code_verifier: str | None = field(repr=False)
    return_to: str | None
    created_at: int
    expires_at: int
    session: SessionLink | None = None

    @property
    def owner(self) -> str:
        """Whose connection this sign-in makes: its session's owner, or "anonymous"."""
        return self.session.owner if self.session else owners.ANONYMOUS


@dataclass(frozen=True)
class UsedState:
    """A state's tombstone: the sign-in was consumed; completed, failed or still going."""

    digest: str
    binding: str = field(repr=False)
    expires_at: int
    redirect_uri: str
    return_to: str | None = None
    session_key: str | None = field(default=None, repr=False)
    return_url: str | None = None
    completed: bool = False
    failed: bool = False
    connection_id: str | None = None
    site_name: str = ""
    user_name: str = ""
    reconnected: bool = False
    sealed_result: str | None = field(default=None, repr=False)

    def bound_to(self, binding: str) -> bool:
        return hmac.compare_digest(self.binding, binding)

    @classmethod
    def from_item(cls, digest: str, item: dict[str, Any]) -> UsedState:
        def s(name: str) -> str | None:
            value = item.get(name)
            return value["S"] if value else None

        return cls(
            digest=digest,
            binding=s("binding") or "",
            expires_at=int(item["expires_at"]["N"]),
            redirect_uri=s("redirect_uri") or "",
            return_to=s("return_to"),
            session_key=s("session_key"),
            return_url=s("return_url"),
            completed="completed_at" in item,
            failed="failed_at" in item,
            connection_id=s("connection_id"),
            site_name=s("site_name") or "",
            user_name=s("user_name") or "",
            reconnected=bool(item.get("reconnected", {}).get("BOOL")),
            sealed_result=s("sealed_result"),
        )


class StateStore:
    """The state table: ``issue`` a state for a browser, ``consume`` it once."""

    def __init__(self, settings: Settings) -> None:
        self._table = settings.state_table
        self._ttl_seconds = settings.state_ttl_seconds

    def issue(
        self,
        state: str,
        *,
        binding: str,
        redirect_uri: str,
        code_verifier: str | None,
        return_to: str | None,
        now: int,
        session: SessionLink | None = None,
    ) -> StateRecord:
        """Store a new state, bound to the browser whose nonce hashes to ``binding``."""
        record = StateRecord(
            state=state,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            return_to=return_to,
            created_at=now,
            expires_at=now + self._ttl_seconds,
            session=session,
        )
        item = {
            **_key(state_digest(record.state)),
            "binding": {"S": binding},
            "redirect_uri": {"S": redirect_uri},
            "created_at": {"N": str(record.created_at)},
            "expires_at": {"N": str(record.expires_at)},
        }
        if code_verifier:
            item["code_verifier"] = {"S": code_verifier}
        if return_to:
            item["return_to"] = {"S": return_to}
        if session:
            item["session_key"] = {"S": session.key}
            item["owner"] = {"S": session.owner}
            if session.return_url:
                item["return_url"] = {"S": session.return_url}
            if session.reconnect_connection_id:
                item["reconnect_connection_id"] = {"S": session.reconnect_connection_id}
            if session.reconnect_label:
                item["reconnect_label"] = {"S": session.reconnect_label}
        # A collision of 256 random bits will not happen; the condition makes sure of it anyway.
        aws.dynamodb().put_item(
            TableName=self._table,
            Item=item,
            ConditionExpression="attribute_not_exists(#s)",
            ExpressionAttributeNames={"#s": "state"},
        )
        return record

    def consume(self, state: str, *, binding: str, now: int) -> StateRecord:
        """Mark the state used and return it, or raise a StateError and change nothing.

        A state already used raises StateUsed with its tombstone (the caller tells the
        browser that completed it from any other); the other errors carry the sign-in's
        return URL when it has one, so a page can offer the way back to the app.
        """
        dynamodb = aws.dynamodb()
        digest = state_digest(state)
        try:
            response = dynamodb.update_item(
                TableName=self._table,
                Key=_key(digest),
                UpdateExpression="SET used_at = :now REMOVE code_verifier",
                ConditionExpression=(
                    "attribute_exists(#s) AND attribute_not_exists(used_at)"
                    " AND #b = :binding AND expires_at > :now"
                ),
                ExpressionAttributeNames={"#s": "state", "#b": "binding"},
                ExpressionAttributeValues={":binding": {"S": binding}, ":now": {"N": str(now)}},
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except dynamodb.exceptions.ConditionalCheckFailedException as failure:
            existing = cast(dict[str, Any], failure.response).get("Item")
            if not existing:
                raise StateUnknown("the state is unknown or was already used") from None
            return_url = existing.get("return_url", {}).get("S")
            if "used_at" in existing:
                raise StateUsed(UsedState.from_item(digest, existing)) from None
            if int(existing["expires_at"]["N"]) <= now:
                raise StateExpired("the state has expired", return_url=return_url) from None
            if not hmac.compare_digest(existing["binding"]["S"], binding):
                raise BindingMismatch(
                    "the browser binding cookie does not match", return_url=return_url
                ) from None
            raise StateUnknown("the state could not be consumed") from None
        item = response["Attributes"]
        session = None
        if "session_key" in item:
            session = SessionLink(
                key=item["session_key"]["S"],
                owner=item["owner"]["S"],
                return_url=item.get("return_url", {}).get("S"),
                reconnect_connection_id=item.get("reconnect_connection_id", {}).get("S"),
                reconnect_label=item.get("reconnect_label", {}).get("S"),
            )
        return StateRecord(
            state=state,
            redirect_uri=item["redirect_uri"]["S"],
            code_verifier=item.get("code_verifier", {}).get("S"),
            return_to=item.get("return_to", {}).get("S"),
            created_at=int(item["created_at"]["N"]),
            expires_at=int(item["expires_at"]["N"]),
            session=session,
        )

    def completed(
        self,
        state: str,
        *,
        connection_id: str,
        site_name: str,
        user_name: str,
        reconnected: bool,
        sealed_result: str | None,
        now: int,
    ) -> None:
        """Leave what was connected on the used state, for ``state_ttl_seconds`` more: the
        browser that completed it may come back (reload, Back, approving again)."""
        values: dict[str, Any] = {
            ":now": {"N": str(now)},
            ":until": {"N": str(now + self._ttl_seconds)},
            ":connection_id": {"S": connection_id},
            ":site_name": {"S": site_name},
            ":user_name": {"S": user_name},
            ":reconnected": {"BOOL": reconnected},
        }
        update = (
            "SET completed_at = :now, expires_at = :until, connection_id = :connection_id,"
            " site_name = :site_name, user_name = :user_name, reconnected = :reconnected"
        )
        if sealed_result:
            update += ", sealed_result = :sealed_result"
            values[":sealed_result"] = {"S": sealed_result}
        aws.dynamodb().update_item(
            TableName=self._table,
            Key=_key(state_digest(state)),
            UpdateExpression=update,
            ExpressionAttributeValues=values,
        )

    def failed(self, state: str, *, now: int) -> None:
        """The used state ended without a connection (its page says why)."""
        aws.dynamodb().update_item(
            TableName=self._table,
            Key=_key(state_digest(state)),
            UpdateExpression="SET failed_at = :now",
            ExpressionAttributeValues={":now": {"N": str(now)}},
        )

    def used(self, digest: str, *, now: int) -> UsedState | None:
        """The tombstone named ``digest``, while it lives; None otherwise."""
        item = (
            aws.dynamodb()
            .get_item(TableName=self._table, Key=_key(digest), ConsistentRead=True)
            .get("Item")
        )
        if not item or "used_at" not in item or int(item["expires_at"]["N"]) <= now:
            return None
        return UsedState.from_item(digest, item)
