"""Connection records in DynamoDB: one item per Capsule user on a Capsule site.

``ConnectionStore`` owns the table and the token key: callers hand it identities and token
pairs, and it seals and unseals them itself. Every change of tokens or status bumps
``version``; refreshes write with ``version = :v AND lease_owner = :owner`` so a slower
worker can never overwrite newer tokens. Active connections carry ``refresh_queue`` and sit
in the sparse ``DueForRefresh`` index by ``refresh_due_at``; leaving the active state
removes them from it. Pending connections (waiting for the app's confirm) sit in the same
index under their own queue, by the end of their confirm window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from capsule_oauth import owners
from capsule_oauth.config import Settings
from capsule_oauth.errors import LeaseNotAcquired, StaleWrite
from capsule_oauth.store import aws, crypto
from capsule_oauth.store.crypto import TokenPair
from capsule_oauth.store.records import (
    ACTIVE,
    DISCONNECTED,
    HOOKS_OFF,
    NEEDS_REAUTH,
    PENDING,
    Connection,
    Identity,
    Saved,
    refresh_due_at,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

# The record shapes live in store/records.py; they are named here too, where callers look.
__all__ = [
    "ACTIVE",
    "DISCONNECTED",
    "NEEDS_REAUTH",
    "PENDING",
    "Connection",
    "ConnectionStore",
    "Identity",
    "Saved",
    "refresh_due_at",
]

DUE_INDEX = "DueForRefresh"
OWNER_INDEX = "ByOwner"
QUEUE = "active"
PENDING_QUEUE = "pending"  # pending connections, by the time their confirm window ends


def _n(value: int) -> AttributeValueTypeDef:
    return {"N": str(value)}


def _s(value: str) -> AttributeValueTypeDef:
    return {"S": value}


def queued_ids(
    table: str,
    index: str,
    queue: tuple[str, str],
    due_by: tuple[str, int],
    *,
    page_size: int,
) -> Iterator[str]:
    """Ids in a sparse index's queue whose due time has come, oldest first, lazily: the
    reads follow the number due, never the table size."""
    (queue_name, queue_value), (due_name, now) = queue, due_by
    dynamodb = aws.dynamodb()
    kwargs: dict[str, Any] = {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": f"{queue_name} = :queue AND {due_name} <= :now",
        "ExpressionAttributeValues": {":queue": _s(queue_value), ":now": _n(now)},
        "Limit": page_size,
    }
    while True:
        page = dynamodb.query(**kwargs)
        for item in page.get("Items", []):
            yield item["connection_id"]["S"]
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class ConnectionStore:
    """The connections table, and the KMS key its tokens are sealed with."""

    def __init__(self, settings: Settings) -> None:
        self._table = settings.connections_table
        self._key_id = settings.token_key_id
        self._lease_seconds = settings.lease_seconds

    def _seal(self, connection_id: str, tokens: TokenPair) -> AttributeValueTypeDef:
        return {"B": crypto.seal(self._key_id, connection_id, tokens)}

    def tokens(self, connection: Connection) -> TokenPair:
        """The decrypted tokens of a connection as read (raises TokenDecryptionError)."""
        return crypto.unseal(self._key_id, connection.connection_id, connection.tokens)

    def save_authorized(
        self,
        identity: Identity,
        tokens: TokenPair,
        *,
        expires_at: int,
        scope: str,
        refresh_due_at: int,
        now: int,
        pending_until: int | None = None,
        result_hash: str | None = None,
    ) -> Saved:
        """Create or overwrite the connection with fresh tokens; say what it replaced.

        ``pending_until``: save it ``pending`` (in the pending queue until then) unless the
        owner already has it active or needing reauth, which is a reconnect and applies at
        once. ``result_hash``: the capsule_result that confirms it.
        """
        sealed = self._seal(identity.connection_id, tokens)  # once, whichever write applies
        if pending_until is not None:
            dynamodb = aws.dynamodb()
            try:
                return self._save(
                    identity, sealed, expires_at=expires_at, scope=scope, now=now,
                    status=PENDING, queue=PENDING_QUEUE, due=pending_until,
                    result_hash=result_hash,
                    condition="attribute_not_exists(connection_id)"
                    " OR #status IN (:pending, :disconnected)",
                )  # fmt: skip
            except dynamodb.exceptions.ConditionalCheckFailedException:
                pass  # the owner has this account connected: a reconnect, as below
        return self._save(
            identity, sealed, expires_at=expires_at, scope=scope, now=now,
            status=ACTIVE, queue=QUEUE, due=refresh_due_at, result_hash=result_hash,
        )  # fmt: skip

    def _save(
        self,
        identity: Identity,
        sealed: AttributeValueTypeDef,
        *,
        expires_at: int,
        scope: str,
        now: int,
        status: str,
        queue: str,
        due: int,
        result_hash: str | None,
        condition: str | None = None,
    ) -> Saved:
        result = "result_hash = :result," if result_hash else ""
        values: dict[str, AttributeValueTypeDef] = {
            ":lifetime": _n(max(expires_at - now, 0)),
            ":owner": _s(identity.owner),
            ":subdomain": _s(identity.subdomain),
            ":site_name": _s(identity.site_name),
            ":site_url": _s(identity.site_url),
            ":user_id": _s(identity.user_id),
            ":user_name": _s(identity.user_name),
            ":username": _s(identity.username),
            ":scope": _s(scope),
            ":status": _s(status),
            ":tokens": sealed,
            ":expires_at": _n(expires_at),
            ":queue": _s(queue),
            ":due": _n(due),
            ":zero": _n(0),
            ":one": _n(1),
            ":now": _n(now),
        }
        if result_hash:
            values[":result"] = _s(result_hash)
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"connection_id": _s(identity.connection_id)},
            "UpdateExpression": (
                "SET #owner = :owner, subdomain = :subdomain, site_name = :site_name,"
                " site_url = :site_url,"
                " user_id = :user_id, user_name = :user_name, username = :username,"
                f" #scope = :scope, #status = :status, tokens = :tokens, {result}"
                " expires_at = :expires_at, refresh_queue = :queue, refresh_due_at = :due,"
                " failure_count = :zero, connected_at = :now, updated_at = :now,"
                " token_lifetime = :lifetime,"
                " created_at = if_not_exists(created_at, :now),"
                " version = if_not_exists(version, :zero) + :one"
                " REMOVE last_error, last_error_at, lease_owner, lease_expires_at,"
                " disconnect_reason" + ("" if result_hash else ", result_hash")
            ),
            "ExpressionAttributeNames": {
                "#scope": "scope",
                "#status": "status",
                "#owner": "owner",
            },
            "ExpressionAttributeValues": values,
            "ReturnValues": "UPDATED_OLD",
        }
        if condition:
            request["ConditionExpression"] = condition
            values[":pending"] = _s(PENDING)
            values[":disconnected"] = _s(DISCONNECTED)
        response = aws.dynamodb().update_item(**request)
        old = response.get("Attributes", {})
        previous = old.get("tokens", {}).get("B")
        return Saved("version" in old, bytes(previous) if previous else None, status == PENDING)

    def pending_due(self, *, now: int, page_size: int = 100) -> Iterator[str]:
        """Ids of pending connections whose time to be confirmed is over: one Query on the
        pending queue of the due index, so the work follows the number pending."""
        return self._queued(PENDING_QUEUE, now=now, page_size=page_size)

    def activate(self, current: Connection, *, refresh_due_at: int, now: int) -> Connection:
        """pending -> active, only while it is still the pending connection ``current`` is
        (same result, same version): into the refresh queue, a version of its own."""
        return self._fenced_update(
            current,
            owner="",
            lease_held=False,
            update=(
                "SET #status = :active, refresh_queue = :queue, refresh_due_at = :due,"
                " updated_at = :now, version = version + :one"
            ),
            names={"#status": "status"},
            values={
                ":active": _s(ACTIVE),
                ":queue": _s(QUEUE),
                ":due": _n(refresh_due_at),
                ":now": _n(now),
                ":one": _n(1),
            },
            pending=True,
        )

    def withdraw_pending(self, current: Connection, *, retry_at: int, now: int) -> Connection:
        """Make a pending connection unconfirmable before its grant is revoked: its result
        is dropped, and it waits in the pending queue until ``retry_at`` should revoking
        fail. Fenced on the version read and the status still pending."""
        return self._fenced_update(
            current,
            owner="",
            lease_held=False,
            update=(
                "SET refresh_due_at = :retry_at, updated_at = :now, version = version + :one"
                " REMOVE result_hash"
            ),
            values={":retry_at": _n(retry_at), ":now": _n(now), ":one": _n(1)},
            pending=True,
        )

    def delete_pending(self, current: Connection) -> bool:
        """Delete a withdrawn pending connection, unless a new sign-in saved it since."""
        dynamodb = aws.dynamodb()
        try:
            dynamodb.delete_item(
                TableName=self._table,
                Key={"connection_id": _s(current.connection_id)},
                ConditionExpression="version = :version AND #status = :pending",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":version": _n(current.version),
                    ":pending": _s(PENDING),
                },
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def unseal(self, connection_id: str, sealed: bytes) -> TokenPair:
        """Tokens sealed for ``connection_id`` (those ``Saved`` reports it replaced)."""
        return crypto.unseal(self._key_id, connection_id, sealed)

    def list_for_owner(self, owner: str) -> list[Connection]:
        """One owner's connections: a Query on the owner index, page by page (never a Scan)."""
        dynamodb = aws.dynamodb()
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": _s(owner)},
        }
        found: list[Connection] = []
        while True:
            page = dynamodb.query(**kwargs)
            found.extend(Connection.from_item(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get(self, connection_id: str) -> Connection | None:
        response = aws.dynamodb().get_item(
            TableName=self._table, Key={"connection_id": _s(connection_id)}, ConsistentRead=True
        )
        item = response.get("Item")
        return Connection.from_item(item) if item else None

    def status_of(self, connection_id: str) -> tuple[str, int] | None:
        """(status, version) as stored now, or None: a small consistent read, no tokens."""
        response = aws.dynamodb().get_item(
            TableName=self._table,
            Key={"connection_id": _s(connection_id)},
            ConsistentRead=True,
            ProjectionExpression="#status, version",
            ExpressionAttributeNames={"#status": "status"},
        )
        item = response.get("Item")
        if not item or "status" not in item:
            return None
        return item["status"]["S"], int(item.get("version", {}).get("N", "0"))

    def due_ids(self, *, now: int, page_size: int = 500) -> Iterator[str]:
        """Ids of active connections whose ``refresh_due_at`` has come, oldest first, lazily."""
        return self._queued(QUEUE, now=now, page_size=page_size)

    def _queued(self, queue: str, *, now: int, page_size: int) -> Iterator[str]:
        return queued_ids(
            self._table,
            DUE_INDEX,
            ("refresh_queue", queue),
            ("refresh_due_at", now),
            page_size=page_size,
        )

    def acquire_lease(
        self, connection_id: str, *, owner: str, now: int, lease_seconds: int | None = None
    ) -> Connection | None:
        """Take the refresh lease and return the item as it is now; None if it does not exist.

        The returned item is read in the same atomic write that takes the lease, so it is the
        re-read that must follow taking a lease. Raises LeaseNotAcquired if another holds it.
        """
        until = now + (self._lease_seconds if lease_seconds is None else lease_seconds)
        dynamodb = aws.dynamodb()
        try:
            response = dynamodb.update_item(
                TableName=self._table,
                Key={"connection_id": _s(connection_id)},
                UpdateExpression="SET lease_owner = :owner, lease_expires_at = :until",
                ConditionExpression=(
                    "attribute_exists(connection_id) AND (attribute_not_exists(lease_owner)"
                    " OR lease_expires_at < :now OR lease_owner = :owner)"
                ),
                ExpressionAttributeValues={
                    ":owner": _s(owner),
                    ":until": _n(until),
                    ":now": _n(now),
                },
                # The item as it was: whose lease this took, and (with ours set below) the
                # re-read that must follow taking a lease, in the same atomic write.
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except dynamodb.exceptions.ConditionalCheckFailedException as failure:
            existing = cast(dict[str, Any], failure.response).get("Item")
            if not existing:
                return None
            raise LeaseNotAcquired(connection_id) from None
        before = Connection.from_item(response["Attributes"])
        return replace(
            before,
            lease_owner=owner,
            lease_expires_at=until,
            lease_taken_over=before.lease_owner not in (None, owner),
        )

    def release_lease(self, connection_id: str, *, owner: str) -> None:
        dynamodb = aws.dynamodb()
        # Already released by a fenced write, or taken over after expiry: nothing to do.
        with contextlib.suppress(dynamodb.exceptions.ConditionalCheckFailedException):
            dynamodb.update_item(
                TableName=self._table,
                Key={"connection_id": _s(connection_id)},
                UpdateExpression="REMOVE lease_owner, lease_expires_at",
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues={":owner": _s(owner)},
            )

    def _fenced_update(
        self,
        current: Connection,
        *,
        owner: str,
        update: str,
        values: dict[str, AttributeValueTypeDef],
        names: dict[str, str] | None = None,
        lease_held: bool = True,
        same_tokens: bool = False,
        pending: bool = False,
    ) -> Connection:
        """Write only if ``current`` is still the stored version (``same_tokens``: still holds
        the tokens read and is active) and (``lease_held``) ``owner`` still holds the lease."""
        dynamodb = aws.dynamodb()
        fence = "version = :version"
        fenced: dict[str, AttributeValueTypeDef] = {":version": _n(current.version)}
        if same_tokens:
            fence = "tokens = :read_tokens AND #fence_status = :fence_active"
            fenced = {":read_tokens": {"B": current.tokens}, ":fence_active": _s(ACTIVE)}
            names = {**(names or {}), "#fence_status": "status"}
        if pending:
            fence += " AND #fence_status = :fence_pending"
            fenced[":fence_pending"] = _s(PENDING)
            names = {**(names or {}), "#fence_status": "status"}
        if lease_held:
            fence += " AND lease_owner = :owner"
            fenced[":owner"] = _s(owner)
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"connection_id": _s(current.connection_id)},
            "UpdateExpression": update,
            "ConditionExpression": fence,
            "ExpressionAttributeValues": {**values, **fenced},
            "ReturnValues": "ALL_NEW",
        }
        if names:  # DynamoDB refuses an empty ExpressionAttributeNames
            request["ExpressionAttributeNames"] = names
        try:
            response = dynamodb.update_item(**request)
        except dynamodb.exceptions.ConditionalCheckFailedException:
            raise StaleWrite(f"connection {current.connection_id} changed under us") from None
        return Connection.from_item(response["Attributes"])

    def store_refreshed(
        self,
        current: Connection,
        tokens: TokenPair,
        *,
        owner: str,
        expires_at: int,
        scope: str,
        refresh_due_at: int,
        now: int,
        lifetime: int = 0,
    ) -> Connection:
        """Save rotated tokens atomically, clear failures and release the lease.

        Fenced on the tokens read (and the connection still active), not the lease or the
        version: Capsule has already rotated, so these are the newest tokens unless someone
        saved others since we read (a reconnect). A lease that lapsed while Capsule answered,
        or a failure another worker noted meanwhile, must not throw them away.
        """
        return self._fenced_update(
            current,
            owner=owner,
            lease_held=False,
            same_tokens=True,
            update=(
                "SET tokens = :tokens, expires_at = :expires_at, #scope = :scope,"
                " token_lifetime = :lifetime,"
                " refresh_due_at = :due, last_refreshed_at = :now, updated_at = :now,"
                " failure_count = :zero, version = version + :one,"
                # Connections saved before owners existed join the owner index here.
                " #conn_owner = if_not_exists(#conn_owner, :anonymous)"
                " REMOVE lease_owner, lease_expires_at, last_error, last_error_at,"
                " rate_limited_until"
            ),
            names={"#scope": "scope", "#conn_owner": "owner"},
            values={
                ":anonymous": _s(owners.ANONYMOUS),
                ":lifetime": _n(lifetime),
                ":tokens": self._seal(current.connection_id, tokens),
                ":expires_at": _n(expires_at),
                ":scope": _s(scope),
                ":due": _n(refresh_due_at),
                ":now": _n(now),
                ":zero": _n(0),
                ":one": _n(1),
            },
        )

    def record_failure(
        self,
        current: Connection,
        *,
        owner: str,
        error: str,
        retry_at: int,
        now: int,
        new_version: bool = False,
    ) -> Connection:
        """Keep the tokens; note the failure and when to try again; release the lease (fenced).

        ``new_version``: this failure changes what the app is told (the connection is now
        "refresh failing"), so it gets a version of its own, as every status event does.
        """
        bump = ", version = version + :one" if new_version else ""
        return self._fenced_update(
            current,
            owner=owner,
            update=(
                "SET failure_count = if_not_exists(failure_count, :zero) + :one,"
                " last_error = :error, last_error_at = :now, refresh_due_at = :retry_at,"
                f" updated_at = :now{bump} REMOVE lease_owner, lease_expires_at"
            ),
            values={
                ":error": _s(error),
                ":retry_at": _n(retry_at),
                ":now": _n(now),
                ":zero": _n(0),
                ":one": _n(1),
            },
        )

    def record_rate_limited(
        self, current: Connection, *, owner: str, until: int, retry_at: int, now: int
    ) -> Connection:
        """Capsule's token endpoint answered 429: nobody refreshes this connection before
        ``until`` (every caller reads it here, not from Capsule), the schedule tries again at
        ``retry_at``; the lease is released (fenced). Waiting out a rate limit is no failure:
        the failure count, and the version that status events follow, stay as they are."""
        return self._fenced_update(
            current,
            owner=owner,
            update=(
                "SET rate_limited_until = :until, refresh_due_at = :retry_at, updated_at = :now"
                " REMOVE lease_owner, lease_expires_at"
            ),
            values={":until": _n(until), ":retry_at": _n(retry_at), ":now": _n(now)},
        )

    def mark_needs_reauth(
        self, current: Connection, *, owner: str, error: str, now: int
    ) -> Connection:
        """Our refresh token is still the stored one and Capsule refused it: the grant is gone.

        The version condition is the fresh read: if anyone stored other tokens since we read
        them, this raises StaleWrite and the connection stays active.
        """
        return self._fenced_update(
            current,
            owner=owner,
            update=(
                "SET #status = :status, last_error = :error, last_error_at = :now,"
                " updated_at = :now, version = version + :one"
                " REMOVE refresh_queue, lease_owner, lease_expires_at"
            ),
            names={"#status": "status"},
            values={
                ":status": _s(NEEDS_REAUTH),
                ":error": _s(error),
                ":now": _n(now),
                ":one": _n(1),
            },
        )

    def mark_disconnected(
        self, current: Connection, *, owner: str, now: int, reason: str
    ) -> Connection:
        """The person disconnected: forget the tokens, leave the schedule, keep the record.

        ``reason``: "revoked" (Capsule revoked the grant) or "forgotten" (forced without).
        """
        return self._fenced_update(
            current,
            owner=owner,
            update=(
                "SET #status = :status, updated_at = :now, disconnected_at = :now,"
                " disconnect_reason = :reason, version = version + :one, hook_status = :off"
                " REMOVE tokens, refresh_queue, lease_owner, lease_expires_at,"
                # The hook URL dies with the connection (store/hooks.py).
                " hook_token_hash, hook_queue, hook_check_due_at, hook_ids, hook_stale_ids,"
                " hook_events"
            ),
            names={"#status": "status"},
            values={
                ":status": _s(DISCONNECTED),
                ":reason": _s(reason),
                ":off": _s(HOOKS_OFF),
                ":now": _n(now),
                ":one": _n(1),
            },
        )
