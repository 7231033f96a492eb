"""Status events: each transition of a connection, derived from the ConnectionsTable stream.

An event is derived from a committed change (the stream's old and new images), never sent
beside the write, so a crash after a write cannot lose it. Every transition carries a new
``version`` of the connection; (``connection_id``, ``version``) is the key consumers dedupe
on. A routine refresh, a lease taken or released, a failure below the threshold: nothing.

Publishing keeps each connection's events in order: a PutEvents call holds at most one
event per connection, and once one of a connection's events fails, its later events in the
batch are not sent (they fail too, and the stream retries them in order).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from capsule_oauth.flows.connections import iso
from capsule_oauth.observability import logger
from capsule_oauth.store.records import ACTIVE, DISCONNECTED, NEEDS_REAUTH, PENDING, Connection

if TYPE_CHECKING:
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

CREATED = "Connection Created"
RECONNECTED = "Connection Reconnected"
NEEDS_REAUTH_EVENT = "Connection Needs Reauth"
DISCONNECTED_EVENT = "Connection Disconnected"
REFRESH_FAILING = "Connection Refresh Failing"
REFRESH_RECOVERED = "Connection Refresh Recovered"
DETAIL_TYPES = (
    CREATED,
    RECONNECTED,
    NEEDS_REAUTH_EVENT,
    DISCONNECTED_EVENT,
    REFRESH_FAILING,
    REFRESH_RECOVERED,
)

_PUT_EVENTS_MAX = 10  # entries per PutEvents call


@dataclass(frozen=True)
class StatusEvent:
    detail_type: str
    detail: dict[str, Any]

    @property
    def connection_id(self) -> str:
        return str(self.detail["connection_id"])


def connection_from_image(image: Mapping[str, Any] | None) -> Connection | None:
    """A stream image as a Connection, without its sealed tokens (never needed here)."""
    if not image or "status" not in image or "connection_id" not in image:
        return None
    return Connection.from_item({name: value for name, value in image.items() if name != "tokens"})


def transition(
    old: Connection | None, new: Connection | None, threshold: int
) -> StatusEvent | None:
    """The status event one change of a connection makes, if it makes one."""
    if new is None:
        return None  # an item deleted by hand: nothing the connector did
    if old is not None and new.version == old.version:
        return None  # lease taken or released, a failure below the threshold
    detail_type, reason = _kind(old, new, threshold)
    if detail_type is None:
        return None
    return StatusEvent(
        detail_type,
        {
            "connection_id": new.connection_id,
            "owner": new.owner,
            "status": new.status,
            # A pending connection was never usable: confirming it is its creation.
            "previous_status": old.status if old is not None and old.status != PENDING else None,
            "site": {"subdomain": new.subdomain, "name": new.site_name},
            "user": {"id": new.user_id, "name": new.user_name},
            "reason": reason,
            "version": new.version,
            "occurred_at": iso(new.updated_at) or iso(int(datetime.now(UTC).timestamp())),
        },
    )


def _kind(old: Connection | None, new: Connection, threshold: int) -> tuple[str | None, str | None]:
    """(detail type, reason) of the change from ``old`` to ``new``; (None, None): no event."""
    if old is None or old.status == PENDING:  # pending: nothing to tell until confirmed
        return (CREATED, "connected") if new.status == ACTIVE else (None, None)
    # Connecting an active connection again (a new grant) is a reconnect too.
    granted_again = (new.connected_at or 0) != (old.connected_at or 0)
    if new.status != old.status or (new.status == ACTIVE and granted_again):
        return _entered(new)
    if new.status == ACTIVE:
        if old.failure_count < threshold <= new.failure_count:
            return REFRESH_FAILING, new.last_error
        if old.failure_count >= threshold and new.failure_count == 0:
            return REFRESH_RECOVERED, "refreshed"
    return None, None


def _entered(new: Connection) -> tuple[str | None, str | None]:
    """The event of a connection entering its status."""
    if new.status == ACTIVE:
        return RECONNECTED, "connected"
    if new.status == NEEDS_REAUTH:
        return NEEDS_REAUTH_EVENT, new.last_error or "invalid_grant"
    if new.status == DISCONNECTED:
        return DISCONNECTED_EVENT, new.disconnect_reason or "revoked"
    return None, None


@dataclass(frozen=True)
class Pending:
    """An event waiting to be published, and the stream record it came from."""

    record_id: str
    event: StatusEvent


@dataclass(frozen=True)
class Derived:
    """What a batch of stream records makes: its events in order, and the sequence numbers of
    the records that could not be understood (each fails alone; the others still publish)."""

    events: list[Pending]
    unreadable: set[str]


def derive(records: Iterable[Mapping[str, Any]], threshold: int) -> Derived:
    """The events a batch of stream records makes, in order, each with its record's
    sequence number (what a partial batch response names). Each record is read on its
    own: one that cannot be understood is reported, never the batch."""
    found = []
    unreadable: set[str] = set()
    for record in records:
        change = record.get("dynamodb") or {}
        sequence = change.get("SequenceNumber")
        try:
            event = transition(
                connection_from_image(change.get("OldImage")),
                connection_from_image(change.get("NewImage")),
                threshold,
            )
        except Exception as fault:  # a malformed image: retrying this record cannot help others
            logger.error(
                "Stream record not understood",
                extra={"sequence_number": sequence, "error": type(fault).__name__},
            )
            if sequence is not None:
                unreadable.add(sequence)
            continue
        if sequence is not None and event is not None:
            found.append(Pending(sequence, event))
    return Derived(found, unreadable)


def publish(
    events: EventBridgeClient,
    pending: Sequence[Pending],
    *,
    bus: str,
    source: str,
) -> set[str]:
    """Put the events on the bus in order; return the record ids whose event was not put."""
    failed: set[str] = set()
    blocked: set[str] = set()  # connections with an event that failed: hold their later ones
    for chunk in _chunks(pending):
        ready = []
        for item in chunk:
            if item.event.connection_id in blocked:
                failed.add(item.record_id)
            else:
                ready.append(item)
        if not ready:
            continue
        try:
            answer = events.put_events(Entries=[_entry(item.event, bus, source) for item in ready])
            results: list[Mapping[str, Any]] = list(answer.get("Entries", []))
        except Exception as fault:  # the whole call failed: each of its records fails
            logger.warning("PutEvents failed", extra={"error": type(fault).__name__})
            results = [{"ErrorCode": type(fault).__name__}] * len(ready)
        for item, result in zip(ready, _padded(results, len(ready)), strict=True):
            said = {
                "connection_id": item.event.connection_id,
                "detail_type": item.event.detail_type,
                "version": item.event.detail["version"],
            }
            if result.get("ErrorCode") or not result.get("EventId"):
                failed.add(item.record_id)
                blocked.add(item.event.connection_id)
                said["error_code"] = result.get("ErrorCode")
                logger.warning("Status event not published", extra=said)
            else:
                logger.info("Status event published", extra=said)
    return failed


def _padded(results: list[Mapping[str, Any]], size: int) -> list[Mapping[str, Any]]:
    """PutEvents answers one result per entry; a short answer fails the rest."""
    return results[:size] + [{"ErrorCode": "NoResult"}] * (size - len(results))


def _chunks(pending: Iterable[Pending]) -> Iterable[list[Pending]]:
    """In order, at most ten per call and one per connection, so that no connection's later
    event can be put before an earlier one has succeeded."""
    chunk: list[Pending] = []
    seen: set[str] = set()
    for item in pending:
        if len(chunk) == _PUT_EVENTS_MAX or item.event.connection_id in seen:
            yield chunk
            chunk, seen = [], set()
        chunk.append(item)
        seen.add(item.event.connection_id)
    if chunk:
        yield chunk


def _entry(event: StatusEvent, bus: str, source: str) -> PutEventsRequestEntryTypeDef:
    return {
        "EventBusName": bus,
        "Source": source,
        "DetailType": event.detail_type,
        "Detail": json.dumps(event.detail),
        "Resources": [],
    }
