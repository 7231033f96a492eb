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

from capsule_oauth.config import Settings
from capsule_oauth.errors import BindingMismatch, StateExpired, StateUnknown
from capsule_oauth.store import aws


@dataclass(frozen=True)
class StateRecord:
    state: str = field(repr=False)
    redirect_uri: str
    code_verifier: str | None = field(repr=False)
    return_to: str | None
    created_at: int
    expires_at: int


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
    ) -> StateRecord:
        """Store a new state, bound to the browser whose nonce hashes to ``binding``."""
        record = StateRecord(
            state=state,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            return_to=return_to,
            created_at=now,
            expires_at=now + self._ttl_seconds,
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
        return StateRecord(
            state=state,
            redirect_uri=item["redirect_uri"]["S"],
            code_verifier=item.get("code_verifier", {}).get("S"),
            return_to=item.get("return_to", {}).get("S"),
            created_at=int(item["created_at"]["N"]),
            expires_at=int(item["expires_at"]["N"]),
        )
