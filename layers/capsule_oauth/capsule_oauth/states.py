"""Authorization state: issued at start, consumed exactly once at the callback.

A state item lives ``state_ttl_seconds``. DynamoDB's TTL deletes lazily (up to days later),
so expiry is checked in the consume condition itself. The consume is one conditional
DeleteItem that also requires the browser binding to match: a wrong cookie or an expired
state changes nothing, and two simultaneous callbacks cannot both succeed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, cast

from capsule_oauth import aws

# 32 random bytes = 256 bits, URL-safe base64 without padding = 43 characters.
_TOKEN_BYTES = 32
_STATE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43,128}$")


class StateError(Exception):
    """The callback's state cannot be used. ``reason`` is a short name for metrics."""

    reason = "StateInvalid"


class StateMalformed(StateError):
    reason = "StateMalformed"


class StateUnknown(StateError):
    """Never issued, or already used."""

    reason = "StateUnknown"


class StateExpired(StateError):
    reason = "StateExpired"


class BindingMismatch(StateError):
    """The callback came to a different browser from the one that started."""

    reason = "BindingMismatch"


def random_token() -> str:
    return secrets.token_urlsafe(_TOKEN_BYTES)


def binding_hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(ASCII(verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class StateRecord:
    state: str = field(repr=False)
    redirect_uri: str
    code_verifier: str | None = field(repr=False)
    return_to: str | None
    created_at: int
    expires_at: int


def issue(
    table: str,
    *,
    binding: str,
    redirect_uri: str,
    code_verifier: str | None,
    return_to: str | None,
    now: int,
    ttl_seconds: int,
) -> StateRecord:
    record = StateRecord(
        state=random_token(),
        redirect_uri=redirect_uri,
        code_verifier=code_verifier,
        return_to=return_to,
        created_at=now,
        expires_at=now + ttl_seconds,
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
        TableName=table,
        Item=item,
        ConditionExpression="attribute_not_exists(#s)",
        ExpressionAttributeNames={"#s": "state"},
    )
    return record


def consume(table: str, *, state: str | None, nonce: str | None, now: int) -> StateRecord:
    """Delete the state item and return it, or raise a StateError and change nothing."""
    if not state or not _STATE_PATTERN.fullmatch(state):
        raise StateMalformed("the state parameter is missing or malformed")
    if not nonce or not _STATE_PATTERN.fullmatch(nonce):
        raise BindingMismatch("the browser binding cookie is missing")
    binding = binding_hash(nonce)
    dynamodb = aws.dynamodb()
    try:
        response = dynamodb.delete_item(
            TableName=table,
            Key={"state": {"S": state}},
            ConditionExpression="attribute_exists(#s) AND #b = :binding AND expires_at > :now",
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
        stored = existing["binding"]["S"]
        if not hmac.compare_digest(stored, binding):
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
