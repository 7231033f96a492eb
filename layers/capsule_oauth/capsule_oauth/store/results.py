"""Connect results: the one-time ``capsule_result`` a sign-in hands the app's return URL.

Only its SHA-256 is stored, in the state table (TTL on ``expires_at``, expiry also checked
here), beside the connection it confirms and the owner whose link made it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from capsule_oauth.config import Settings
from capsule_oauth.store import aws

_PREFIX = "result#"
_RESULT_BYTES = 32  # 256 bits
_RESULT_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def new_result() -> str:
    return secrets.token_urlsafe(_RESULT_BYTES)


def well_formed(result: object) -> bool:
    return isinstance(result, str) and _RESULT_PATTERN.fullmatch(result) is not None


def result_hash(result: str) -> str:
    return hashlib.sha256(result.encode()).hexdigest()


@dataclass(frozen=True)
class ResultRecord:
    result_hash: str
    connection_id: str
    owner: str
    expires_at: int


class ResultStore:
    def __init__(self, settings: Settings) -> None:
        self._table = settings.state_table
        self._ttl_seconds = settings.connect_confirm_seconds

    def put(self, hashed: str, *, connection_id: str, owner: str, now: int) -> ResultRecord:
        record = ResultRecord(hashed, connection_id, owner, now + self._ttl_seconds)
        aws.dynamodb().update_item(
            TableName=self._table,
            Key={"state": {"S": _PREFIX + hashed}},
            UpdateExpression=(
                "SET kind = :kind, connection_id = :connection_id, #owner = :owner,"
                " expires_at = :expires_at"
            ),
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={
                ":kind": {"S": "connect_result"},
                ":connection_id": {"S": connection_id},
                ":owner": {"S": owner},
                ":expires_at": {"N": str(record.expires_at)},
            },
        )
        return record

    def get(self, hashed: str, *, now: int) -> ResultRecord | None:
        """The live result with this hash, or None (unknown, expired or dead)."""
        item = (
            aws.dynamodb()
            .get_item(
                TableName=self._table, Key={"state": {"S": _PREFIX + hashed}}, ConsistentRead=True
            )
            .get("Item")
        )
        if not item or item.get("kind", {}).get("S") != "connect_result":
            return None
        expires_at = int(item["expires_at"]["N"])
        if expires_at <= now:
            return None
        return ResultRecord(hashed, item["connection_id"]["S"], item["owner"]["S"], expires_at)

    def kill(self, hashed: str) -> None:
        """The result can confirm nothing any more."""
        aws.dynamodb().delete_item(TableName=self._table, Key={"state": {"S": _PREFIX + hashed}})
