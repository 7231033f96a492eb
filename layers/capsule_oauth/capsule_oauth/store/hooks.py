"""The REST hook state on connection records: find a connection by its hook token's hash,
the connections due a hook check, and the hook writes.

Hook writes never bump ``version`` (they are no status change, so no status event) and never
touch the tokens; each is fenced on the hook token hash it read, so a slower writer cannot
record hooks of a token that has since been replaced. Connections with hooks carry
``hook_queue`` and sit in the sparse ``HooksDue`` index by ``hook_check_due_at``; the hook
token's hash is the key of the ``ByHookToken`` index the intake reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from capsule_oauth.config import Settings
from capsule_oauth.errors import StaleWrite
from capsule_oauth.store import aws
from capsule_oauth.store.connections import queued_ids
from capsule_oauth.store.records import ACTIVE, HOOKS_OFF, Connection

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

TOKEN_INDEX = "ByHookToken"  # noqa: S105 - an index name
DUE_INDEX = "HooksDue"
QUEUE = "hooks"


def _s(value: str) -> AttributeValueTypeDef:
    return {"S": value}


def _n(value: int) -> AttributeValueTypeDef:
    return {"N": str(value)}


def _strings(values: Sequence[str]) -> AttributeValueTypeDef:
    return {"L": [{"S": value} for value in values]}


class HookStore:
    """The hook attributes of the connections table."""

    def __init__(self, settings: Settings) -> None:
        self._table = settings.connections_table

    def find_by_token_hash(self, token_hash: str) -> Connection | None:
        """The connection whose hook token hashes to ``token_hash``: one Query, no Scan."""
        page = aws.dynamodb().query(
            TableName=self._table,
            IndexName=TOKEN_INDEX,
            KeyConditionExpression="hook_token_hash = :hash",
            ExpressionAttributeValues={":hash": _s(token_hash)},
            Limit=1,
        )
        items = page.get("Items", [])
        return Connection.from_item(items[0]) if items else None

    def due_ids(self, *, now: int, page_size: int = 100) -> Iterator[str]:
        """Ids of connections due a hook check, oldest first, lazily (a sparse index)."""
        return queued_ids(
            self._table,
            DUE_INDEX,
            ("hook_queue", QUEUE),
            ("hook_check_due_at", now),
            page_size=page_size,
        )

    def begin(
        self,
        connection_id: str,
        *,
        token_hash: str,
        events: Sequence[str],
        base_url: str | None,
        now: int,
    ) -> Connection:
        """Start subscribing with a new hook token: its hash replaces the old one at once
        (the old URL answers 410 from now on) and the old token's hooks become stale.

        The connection must be active (else StaleWrite). Returns the item as written.
        """
        names = {"#status": "status"}
        values: dict[str, AttributeValueTypeDef] = {
            ":hash": _s(token_hash),
            ":events": _strings(events),
            ":failing": _s("failing"),
            ":queue": _s(QUEUE),
            ":now": _n(now),
            ":empty": _strings(()),
            ":active": _s(ACTIVE),
        }
        base = ""
        if base_url is not None:
            base = ", hook_base_url = :base"
            values[":base"] = _s(base_url)
        dynamodb = aws.dynamodb()
        try:
            response = dynamodb.update_item(
                TableName=self._table,
                Key={"connection_id": _s(connection_id)},
                UpdateExpression=(
                    "SET hook_token_hash = :hash, hook_events = :events,"
                    " hook_status = :failing, hook_queue = :queue, hook_check_due_at = :now,"
                    " hook_stale_ids = list_append(if_not_exists(hook_stale_ids, :empty),"
                    " if_not_exists(hook_ids, :empty)), hook_ids = :empty" + base
                ),
                ConditionExpression="#status = :active",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            raise StaleWrite(f"connection {connection_id} is not active") from None
        return Connection.from_item(response["Attributes"])

    def record(
        self,
        connection_id: str,
        *,
        token_hash: str,
        status: str,
        events: Sequence[str],
        hook_ids: Sequence[str],
        stale_ids: Sequence[str],
        checked_at: int,
        next_check_at: int,
    ) -> None:
        """What subscribing or checking found; StaleWrite if the hook token was replaced
        (or the connection left the active state) meanwhile."""
        dynamodb = aws.dynamodb()
        try:
            dynamodb.update_item(
                TableName=self._table,
                Key={"connection_id": _s(connection_id)},
                UpdateExpression=(
                    "SET hook_status = :status, hook_events = :events, hook_ids = :ids,"
                    " hook_stale_ids = :stale, hooks_checked_at = :checked,"
                    " hook_queue = :queue, hook_check_due_at = :due"
                ),
                ConditionExpression="hook_token_hash = :hash AND #status = :active",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":hash": _s(token_hash),
                    ":status": _s(status),
                    ":events": _strings(events),
                    ":ids": _strings(hook_ids),
                    ":stale": _strings(stale_ids),
                    ":checked": _n(checked_at),
                    ":queue": _s(QUEUE),
                    ":due": _n(next_check_at),
                    ":active": _s(ACTIVE),
                },
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            raise StaleWrite(f"connection {connection_id}'s hook token changed") from None

    def turn_off(self, connection_id: str, *, token_hash: str, now: int) -> None:
        """Hooks are off for this connection: its hook token is forgotten (the intake answers
        410) and it leaves the check's index. Fenced on the hook token read."""
        dynamodb = aws.dynamodb()
        try:
            dynamodb.update_item(
                TableName=self._table,
                Key={"connection_id": _s(connection_id)},
                UpdateExpression=(
                    "SET hook_status = :off, hook_events = :empty, hook_ids = :empty,"
                    " hook_stale_ids = :empty, hooks_checked_at = :now"
                    " REMOVE hook_token_hash, hook_queue, hook_check_due_at"
                ),
                ConditionExpression="hook_token_hash = :hash",
                ExpressionAttributeValues={
                    ":off": _s(HOOKS_OFF),
                    ":empty": _strings(()),
                    ":now": _n(now),
                    ":hash": _s(token_hash),
                },
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            raise StaleWrite(f"connection {connection_id}'s hook token changed") from None

    def leave_queue(self, connection_id: str) -> None:
        """No more checks for this connection (it is no longer active)."""
        aws.dynamodb().update_item(
            TableName=self._table,
            Key={"connection_id": _s(connection_id)},
            UpdateExpression="REMOVE hook_queue, hook_check_due_at",
            ConditionExpression="attribute_exists(connection_id)",
        )
