"""Authorization state: issued at start, consumed exactly once at the callback.

A state item lives ``state_ttl_seconds``. DynamoDB's TTL deletes lazily (up to days later),
so expiry is checked in the consume condition itself. The consume is one conditional
DeleteItem that also requires the browser binding to match: a wrong cookie or an expired
state changes nothing, and two simultaneous callbacks cannot both succeed.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any, cast

from capsule_oauth import owners
from capsule_oauth.config import Settings
from capsule_oauth.errors import BindingMismatch, StateExpired, StateUnknown
from capsule_oauth.store import aws


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
            "state": {"S": record.state},
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
        """Delete the state item and return it, or raise a StateError and change nothing."""
        dynamodb = aws.dynamodb()
        try:
            response = dynamodb.delete_item(
                TableName=self._table,
                Key={"state": {"S": state}},
                ConditionExpression=(
                    "attribute_exists(#s) AND #b = :binding AND expires_at > :now"
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
            if int(existing["expires_at"]["N"]) <= now:
                raise StateExpired("the state has expired") from None
            if not hmac.compare_digest(existing["binding"]["S"], binding):
                raise BindingMismatch("the browser binding cookie does not match") from None
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
